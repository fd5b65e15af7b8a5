"""Settings that contradict each other (issue 26, part 8): a setting the chosen search or pruner never reads is
refused at load, in one line naming it, instead of being silently ignored. No Ray here."""

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
        ("search: {algorithm: random, sampler: nsga2}", "search: sampler: applies to algorithm: optuna only, not random"),
        ("search: {algorithm: grid, sampler: tpe}", "search: sampler: applies to algorithm: optuna only, not grid"),
        ("search: {algorithm: grid, startup_trials: 3}", "search: startup_trials: applies to algorithm: optuna only"),
        ("search: {seed: -1}", "search.seed: Input should be greater than or equal to 0 (got -1)"),
        ("search: {seed: 4294967296}", "search.seed: Input should be less than or equal to 4294967295"),
        ("pruner: {name: median, min_rung_results: 2}", "pruner: min_rung_results: pruner median does not use it"),
        ("pruner: {name: hyperband, grace_period: 3}", "pruner: grace_period: pruner hyperband does not use it"),
        ("pruner: {name: none, reduction_factor: 2}", "pruner: reduction_factor: pruner none does not use it"),
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
