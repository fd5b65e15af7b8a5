"""The search layer: space files, samplers, the Ray Tune sweep, results tables and plots.

space (SpaceFile, load_space) + syntax (the `space:` grammar) -> sampling (Optuna
define-by-run, grid points) -> sweep (run_sweep: Ray Tune, Optuna, the pruner) ->
outcome (one rule for a trial's outcome) -> results and plots (results/<name>/).
Never imports tracking: the CLI hands MLflow's callbacks to `run_sweep`.
"""
