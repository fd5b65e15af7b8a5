"""Tracking: a sweep in MLflow, from the Ray driver.

store (tracking URI, artifact location; usable without Ray) -> runs (parent and child runs,
found by tag) -> callback (the Tune callback) -> champion (test, register, alias; report
figures and the model card) -> tracker (what the CLI wires into a sweep).
"""
