"""The command line: argument parsing and dispatch; the one place that wires tracking into a sweep.

main (the parser) -> data (data synth|inspect, train), sweep (run, results),
models (ui, models list|download, predict).
"""
