"""The `mlflow:` section of a sweep file, validated here: the sweep file holds it as an opaque mapping.

    settings = mlflow_settings(space)   # one-line error naming the file and the key, as load_space's
    settings.tracking_uri, settings.experiment, settings.register_as

Tracking owns its facts, so another tracker is a change inside fer_tune/tracking/ only.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError, field_validator

from fer_tune.core.config import Strict, format_validation_error
from fer_tune.errors import FerTuneError
from fer_tune.names import check_name

SECTION = "mlflow"  # the sweep file's key


class MlflowSettings(Strict):
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI wins; default sqlite:///results/mlflow.db
    experiment: str | None = None  # default: the space's name
    register_as: str = "fer-emotion"

    @field_validator("experiment", "register_as")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_name(value, "name")
        except FerTuneError as err:
            raise ValueError(str(err).removeprefix("name: ")) from None


def mlflow_settings(space: Any) -> MlflowSettings:
    """The validated `mlflow:` section of `space` (a SpaceFile)."""
    try:
        return MlflowSettings.model_validate(getattr(space, SECTION))
    except ValidationError as err:
        raise FerTuneError(f"{space.path}: {format_validation_error(err, MlflowSettings, f'{SECTION}.')}") from None
