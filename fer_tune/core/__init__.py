"""The training core: torch and pydantic only, so it runs anywhere (a bare GPU box included).

config (TrainConfig) -> models, augment, optim -> classifier (normalization inside) ->
training.fit (train_one_epoch + metrics.evaluate) -> checkpoint (TrainState, state.pt).
Never imports ray, optuna, mlflow, pandas or matplotlib (pyproject.toml's import-linter
contracts keep it so).
"""
