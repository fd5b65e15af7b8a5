"""--warm-start for `fer-tune run`: find and read the earlier sweeps, map their trials, say how many were used.

Tracked sweeps are read from MLflow (fer_tune.tracking.earlier), untracked ones (or with --no-track)
from results/<sweep>/; `auto` picks the earlier sweeps of the same space name on the same data.
"""

from __future__ import annotations

from fer_tune.errors import FerTuneError
from fer_tune.search.console import PREFIX


def source_names(text: str) -> list[str]:
    """`--warm-start TEXT`'s sweep names (or [auto]), each a safe name, else one line."""
    from fer_tune.names import check_sweep_name
    from fer_tune.search.warm_start import AUTO, parse_sources

    names = parse_sources(text)
    for source in names:
        if source != AUTO:
            check_sweep_name(source, "--warm-start")
    return names


def read_sources(space, names: list[str], track: bool) -> list | None:
    """The earlier sweeps `names` (source_names), read before Ray starts (a missing one is one line);
    None for `auto`, which needs the data's fingerprint to choose them."""
    from fer_tune.search.warm_start import AUTO, check_fit

    if space.search.algorithm == "grid":
        raise FerTuneError(
            f"--warm-start: {space.path}: search.algorithm grid runs every point whatever came before; "
            "use optuna or random to warm-start"
        )
    if names == [AUTO]:
        return None
    sweeps = [_read(sweep, space, track) for sweep in dict.fromkeys(names)]
    check_fit(space, sweeps)
    return sweeps


def load_warm_start(space, name: str, data, sweeps: list | None, any_data: bool, track: bool):
    """The WarmStart for a new sweep `name` of `space` on `data` from `sweeps` (read_sources; None: the
    earlier sweeps of this space on this data), or None where there are none."""
    from fer_tune.search.warm_start import auto_sweeps, check_data, map_trials

    fingerprint = data.fingerprint()
    if sweeps is None:
        names = auto_sweeps(space.name, fingerprint, exclude=name)
        if not names:
            print(f"{PREFIX} warm start: no earlier sweep of space {space.name} on this data; starting cold")
            return None
        sweeps = [_read(sweep, space, track) for sweep in names]
    warm = map_trials(space, sweeps, any_data=check_data(sweeps, fingerprint, any_data))
    print(f"{PREFIX} {warm.summary()}", flush=True)
    return warm


def _read(name: str, space, track: bool):
    from fer_tune.search.warm_start import read_results

    if track:
        from fer_tune.tracking.earlier import read_tracked
        from fer_tune.tracking.settings import mlflow_settings
        from fer_tune.tracking.store import tracking_uri

        sweep = read_tracked(name, space.metric, tracking_uri(mlflow_settings(space).tracking_uri))
        if sweep is not None:
            return sweep
    return read_results(name, space.metric)
