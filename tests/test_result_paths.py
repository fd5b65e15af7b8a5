"""results/<name> as a link, and names inside other arguments (issue 26, part 5): refused in one line,
before anything runs, and nothing is written through the link."""

import os

import pytest

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.names import check_sweep_name
from fer_tune.tracking.retrain import find_trial


@pytest.fixture
def linked(workdir, tmp_path_factory):
    """results/out, a link to a folder outside results/, and results/gone, a link to nothing."""
    outside = tmp_path_factory.mktemp("outside")
    (workdir / "results").mkdir()
    os.symlink(outside, workdir / "results" / "out")
    os.symlink(workdir / "nowhere", workdir / "results" / "gone")
    return outside


@pytest.mark.parametrize("name, says", [("out", "outside results/"), ("gone", "to nothing")])
def test_a_link_out_of_results_is_refused_by_name(linked, name, says):
    with pytest.raises(
        FerTuneError, match=rf"^--name {name}: results/{name} is a link to .*, {says}; .*remove the link"
    ):
        check_sweep_name(name, "--name")


def test_a_link_inside_results_and_a_linked_results_folder_are_the_users_choice(workdir, tmp_path_factory):
    disk = tmp_path_factory.mktemp("disk")
    os.symlink(disk, workdir / "results")  # results/ itself on another disk
    (disk / "real").mkdir()
    os.symlink(disk / "real", disk / "alias")
    assert check_sweep_name("alias", "--name") == "alias" and check_sweep_name("real", "--name") == "real"


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "out"],
        ["results", "out"],
        ["results", "sync", "out"],
        ["run", "s.yaml", "--name", "out", "--no-track"],
        ["run", "s.yaml", "--warm-start", "out", "--no-track"],
        ["train", "--trial", "out/abc"],
    ],
)
def test_every_command_taking_a_sweep_name_refuses_the_link_and_writes_nothing(linked, workdir, argv, capsys):
    (workdir / "s.yaml").write_text("name: s\ntrainable: curve\nspace:\n  model: basic\n")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a link to" in err and "Traceback" not in err, err
    assert list(linked.iterdir()) == []


@pytest.mark.parametrize("ref", ["../x/abc", "nosweep/x' OR tags.x = 'y", "s/a b"])
def test_both_parts_of_a_trial_reference_are_names(workdir, ref):
    with pytest.raises(FerTuneError, match=r"^--trial [^\n]*: [^\n]*expected"):
        find_trial(ref)
