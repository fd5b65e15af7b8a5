"""Settings that contradict each other (issue 26, part 8): a setting the chosen search never reads is refused at
load, in one line naming it; one the chosen pruner never reads is harmless (a file switching pruners keeps its
settings) and is accepted with one line saying it is ignored. Nothing is silent. No Ray here."""

import pytest

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import load_space


def space(workdir, section: str):
    path = workdir / "s.yaml"
    path.write_text(f"name: s\n{section}\nspace:\n  model: basic\n  lr: 0.001\n")
    return path


@pytest.mark.parametrize(
    "section, message",
    [
        ("search: {algorithm: random, sampler: nsga2}", "search: sampler: applies to algorithm: optuna only"),
        ("search: {algorithm: grid, sampler: nsga2}", "search: sampler: applies to algorithm: optuna only, not grid"),
        ("search: {algorithm: grid, startup_trials: 3}", "search: startup_trials: applies to algorithm: optuna only"),
        ("search: {seed: -1}", "search.seed: Input should be greater than or equal to 0 (got -1)"),
        ("search: {seed: 4294967296}", "search.seed: Input should be less than or equal to 4294967295"),
    ],
)
def test_a_setting_the_search_never_reads_is_refused(workdir, section, message):
    with pytest.raises(FerTuneError, match="^s.yaml: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_space(space(workdir, section).name)


@pytest.mark.parametrize(
    "section",
    [
        "search: {algorithm: optuna, sampler: nsga2, seed: 4294967295, startup_trials: 2}",
        "search: {algorithm: random, seed: null}",
        "search: {algorithm: grid, sampler: tpe, startup_trials: null}",  # the defaults: what sweep.json holds
        "pruner: {name: asha, grace_period: 2, reduction_factor: 2, min_rung_results: 3}",
        "pruner: {name: median, grace_period: 2}",
        "pruner: {name: hyperband, reduction_factor: 4}",
    ],
)
def test_settings_the_search_reads_are_taken(workdir, section):
    load_space(space(workdir, section).name)


def test_a_contradiction_is_one_line_from_the_command_before_ray(workdir, capsys):
    path = space(workdir, "search: {algorithm: random, sampler: nsga2}")
    assert main(["run", path.name, "--no-track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sampler: applies to algorithm: optuna only" in err, err
    assert not (workdir / "results").exists()  # refused before Ray or any folder


@pytest.mark.parametrize(
    "section, notes",
    [
        ("pruner: {name: median, min_rung_results: 2}", ["pruner.min_rung_results is not read by pruner median "
                                                         "(it takes grace_period); ignored"]),
        ("pruner: {name: hyperband, grace_period: 3}", ["pruner.grace_period is not read by pruner hyperband "
                                                        "(it takes reduction_factor); ignored"]),
        ("pruner: {name: none, grace_period: 2, reduction_factor: 2}", [
            "pruner.grace_period is not read by pruner none (it takes no setting); ignored",
            "pruner.reduction_factor is not read by pruner none (it takes no setting); ignored"]),
        ("pruner: {name: asha, grace_period: 1, reduction_factor: 2, min_rung_results: 1}", []),
        ("pruner: {name: median, grace_period: 1, reduction_factor: 3, min_rung_results: 0}", []),  # defaults
    ],
)  # fmt: skip
def test_a_setting_the_pruner_never_reads_is_named_as_ignored(workdir, section, notes):
    assert load_space(space(workdir, section).name).pruner.ignored() == notes


def test_the_ignored_setting_is_said_before_ray_starts(workdir, capsys):
    """The note comes with the other start-up checks: here the data check then stops the run, before Ray."""
    path = space(workdir, "pruner: {name: none, grace_period: 2}")
    assert main(["run", path.name, "--no-track", "--data", "missing.csv"]) == 1
    out = capsys.readouterr().out
    assert "[fer-tune] note: s.yaml: pruner.grace_period is not read by pruner none (it takes no setting)" in out
