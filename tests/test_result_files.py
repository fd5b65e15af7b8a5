"""The sweep's own files read as carefully as the user's (fer_tune.search.result_files): a results folder damaged
file by file, kind by kind (cut mid-row, binary, empty, a column missing, a value no number, a label outside the
classes, no evaluation rows, re-runs of a sweep without `select:`). `fer-tune report` answers a damaged trials.csv,
curves.csv or sweep.json with one line and exit 1; damaged predictions or re-runs leave their sections out and say
so; `--warm-start` from a damaged curves.csv is one line. No Ray, no training."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_reruns import hand_made
from test_warm_start import EARLIER, FAST, space_from, sweep_yaml, write_earlier

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.search.reruns import write_reruns
from fer_tune.search.result_files import read_curves_csv, read_predictions, read_reruns_csv
from fer_tune.search.results import TrialRecord, write_results
from fer_tune.search.sweep_file import load_space
from fer_tune.search.warm_start import read_results

NAME = "picked"
SPACE = """name: picked
budget: {num_samples: 4, max_epochs: 2}
select: {top_k: 3, seeds: 3}
space:
  model: basic
  lr: {loguniform: [1.0e-4, 1.0e-2]}
"""
CLASSES = ["x", "y", "z"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A whole results/picked/: trials.csv, curves.csv, sweep.json, reruns.csv and the predictions pair."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "picked.yaml").write_text(SPACE)
    space = load_space(root / "picked.yaml")
    records = [
        TrialRecord(t, {"model": "basic", "lr": lr}, _curve(top), "val_accuracy", "max", 2, wall_seconds=9.0,
                    ended_at=100.0 + i)
        for i, (t, lr, top) in enumerate((("a", 1e-3, 0.90), ("b", 2e-3, 0.85), ("c", 3e-3, 0.80), ("d", 4e-3, 0.40)))
    ]  # fmt: skip
    splits = {"validation": {c: 10 for c in CLASSES}}
    out = root / "results" / NAME
    trials = write_results(out, records, space, {"source": "unit", "classes": CLASSES, "splits": splits})
    write_reruns(out, hand_made()[1], trials, space)
    labels = np.arange(30) % 3
    rng = np.random.default_rng(0)
    champion = np.where(rng.random(30) < 0.8, labels, (labels + 1) % 3)
    runner_up = (champion + (rng.random(30) < 0.2)) % 3
    predictions = {"split": "validation", "index": range(30), "label": labels, "champion": champion}
    predictions["runner_up"] = runner_up
    pd.DataFrame(predictions).to_csv(out / "predictions.csv", index=False)
    meta = {"eval_split": "validation", "classes": CLASSES, "champion": "b", "runner_up": "a"}
    (out / "predictions.json").write_text(json.dumps(meta, indent=2))
    return root / "results"


def _curve(top: float) -> pd.DataFrame:
    return pd.DataFrame({"epoch": [1, 2], "val_accuracy": [top - 0.1, top], "val_loss": [1.0, 0.8],
                         "epoch_seconds": [4.0, 5.0]})  # fmt: skip


@pytest.fixture
def results(pristine, tmp_path, monkeypatch):
    """A fresh copy of the pristine folder under the working directory's results/."""
    shutil.copytree(pristine, tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results" / NAME


# ------------------------------------------------------------------------------------------- the damage


def cut_mid_row(path):
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last line starts
    path.write_bytes(data[: last + (len(data) - last) // 2])


def binary(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01")


def empty(path):
    path.write_bytes(b"")


def edit(column, value=None, drop=False):
    """Drop `column`, or set it to `value` in the last row."""

    def damage(path):
        frame = pd.read_csv(path)
        if drop:
            frame = frame.drop(columns=column)
        else:
            frame[column] = frame[column].astype(object)
            frame.loc[frame.index[-1], column] = value
        frame.to_csv(path, index=False)

    damage.__name__ = f"{'without' if drop else 'bad'}_{column}"
    return damage


def edit_json(change):
    def damage(path):
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    return damage


def all_test_rows(path):
    frame = pd.read_csv(path)
    frame.assign(split="test").to_csv(path, index=False)


REQUIRED = [  # (file, damage, what the one line says)
    ("trials.csv", cut_mid_row, "line 5"),
    ("trials.csv", binary, "unreadable"),
    ("trials.csv", empty, "unreadable"),
    ("trials.csv", edit("status", drop=True), "no column status"),
    ("trials.csv", edit("epochs_run", "two"), "line 5, column epochs_run: 'two'; expected an integer >= 0"),
    ("curves.csv", cut_mid_row, "cut short"),
    ("curves.csv", binary, "not UTF-8 text"),
    ("curves.csv", empty, "empty"),
    ("curves.csv", edit("epoch", drop=True), "no column epoch"),
    ("curves.csv", edit("val_accuracy", "n/a?"), "column val_accuracy: 'n/a?'; expected a number"),
    ("curves.csv", edit("epoch", 0), "column epoch: 0; expected an integer >= 1"),
    ("curves.csv", edit("epoch", 1.5), "column epoch: 1.5; expected an integer >= 1"),
    ("sweep.json", cut_mid_row, "not valid JSON"),
    ("sweep.json", binary, "not valid JSON"),
    ("sweep.json", empty, "not valid JSON"),
    ("sweep.json", edit_json(lambda m: m.pop("data")), "no data with source, classes and splits"),
    ("sweep.json", edit_json(lambda m: m["space"]["budget"].update(max_epochs="2")), "space.budget is"),
]


OPTIONAL = [  # (file, damage, the section left out, what its line says)
    ("predictions.csv", cut_mid_row, "per-image", "cut short"),
    ("predictions.csv", binary, "per-image", "not UTF-8 text"),
    ("predictions.csv", empty, "per-image", "empty"),
    ("predictions.csv", edit("label", drop=True), "per-image", "no column label"),
    ("predictions.csv", edit("champion", "cat"), "per-image", "column champion: 'cat'; expected a class index 0..2"),
    ("predictions.csv", edit("label", 3), "per-image", "line 31, column label: 3; expected a class index 0..2"),
    ("predictions.csv", edit("runner_up", -1), "per-image", "column runner_up: -1; expected a class index 0..2"),
    ("predictions.csv", all_test_rows, "per-image", "no rows of split validation"),
    ("predictions.json", cut_mid_row, "per-image", "not valid JSON"),
    ("predictions.json", binary, "per-image", "not UTF-8 text"),
    ("predictions.json", empty, "per-image", "not valid JSON"),
    ("predictions.json", edit_json(lambda m: m.pop("classes")), "per-image", "classes is null"),
    ("predictions.json", edit_json(lambda m: m.update(champion="zz")), "per-image", "trial zz is not in trials.csv"),
    ("reruns.csv", cut_mid_row, "re-runs", "cut short"),
    ("reruns.csv", binary, "re-runs", "not UTF-8 text"),
    ("reruns.csv", empty, "re-runs", "empty"),
    ("reruns.csv", edit("seed", drop=True), "re-runs", "no column seed"),
    ("reruns.csv", edit("best_val_accuracy", "high"), "re-runs", "column best_val_accuracy: 'high'; expected a number"),
    ("reruns.csv", edit("epochs_run", -1), "re-runs", "column epochs_run: -1; expected an integer >= 0"),
    ("reruns.csv", edit("trial_id", "zz"), "re-runs", "line 10, column trial_id: trial zz is not in trials.csv"),
    ("reruns.csv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "re-runs", "no rows"),
    ("sweep.json", edit_json(lambda m: m["space"].update(select=None)), "re-runs", "has no select:"),
]


def _damage_id(case) -> str:
    return f"{case[0]}-{getattr(case[1], '__name__', 'edit')}"


@pytest.mark.parametrize(("name", "damage", "message"), REQUIRED, ids=[_damage_id(c) for c in REQUIRED])
def test_a_damaged_required_file_is_one_line_and_exit_1(results, capsys, name, damage, message):
    damage(results / name)
    assert main(["report", NAME]) == 1
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err  # one line: no traceback
    assert err.startswith(f"fer-tune: error: results/{NAME}/{name}: ") and message in err, err
    assert not (results / "report.json").exists() and not (results / "report.html").exists()


@pytest.mark.parametrize(("name", "damage", "section", "message"), OPTIONAL, ids=[_damage_id(c) for c in OPTIONAL])
def test_a_damaged_optional_file_leaves_its_section_out_and_says_why(results, capsys, name, damage, section, message):
    damage(results / name)
    assert main(["report", NAME]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 1, (out, err)
    file = "reruns.csv" if section == "re-runs" else name
    assert f"left out the {section}" in out and f"results/{NAME}/{file}: " in out and message in out, out
    report = json.loads((results / "report.json").read_text())
    [note] = report["left_out"]
    assert section in note["section"] and message in note["reason"]
    assert "Left out: the " in (results / "report.html").read_text()
    assert report["cost"]["epochs"] == 8 and report["what_mattered"]["rung"] == 2  # the rest is built
    if section == "re-runs":
        assert report["reruns"] == {} and report["how_sure"]["runner_up"]["id"] == "a"
    else:
        assert report["how_sure"] == {} and report["reruns"]["champion"] == "b" and "validation" not in report["answer"]


def test_the_undamaged_folder_has_every_section(results, capsys):
    assert main(["report", NAME]) == 0
    report = json.loads((results / "report.json").read_text())
    assert report["left_out"] == [] and report["answer"]["validation"]["n"] == 30
    assert report["reruns"]["champion"] == "b" and report["how_sure"]["runner_up"]["id"] == "a"
    assert "left out" not in capsys.readouterr().out


def test_the_readers_give_checked_types(results):
    curves = read_curves_csv(results / "curves.csv", "val_accuracy")
    assert curves["epoch"].dtype == "int64" and curves["val_accuracy"].dtype == float
    predictions = read_predictions(results)
    assert {str(predictions["frame"][c].dtype) for c in ("label", "champion", "runner_up")} == {"int64"}
    assert read_reruns_csv(results / "reruns.csv", "val_accuracy")["seed"].dtype == "int64"
    (results / "predictions.csv").unlink()
    assert read_predictions(results) is None  # a sweep that saved none


def test_a_sweep_whose_trials_reported_nothing_has_an_empty_curves_table(results):
    (results / "curves.csv").write_text("\n")  # what write_results writes then
    assert read_curves_csv(results / "curves.csv", "val_accuracy").empty


def test_a_previous_champion_may_predict_a_class_the_sweep_lacks(results):
    frame = pd.read_csv(results / "predictions.csv")
    frame["previous_champion"] = -1
    frame.to_csv(results / "predictions.csv", index=False)
    assert (read_predictions(results)["frame"]["previous_champion"] == -1).all()


# ---------------------------------------------------------------------------------------- warm starts


def test_warm_start_from_curves_without_epochs_is_one_line(tmp_path):
    old = space_from(tmp_path, "old", "\n  model: basic\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    write_earlier(tmp_path / "results", "old-1", old, EARLIER[:2])
    edit("epoch", drop=True)(tmp_path / "results" / "old-1" / "curves.csv")
    with pytest.raises(FerTuneError, match=r"old-1/curves.csv: no column epoch; expected columns trial_id, epoch$"):
        read_results("old-1", "val_accuracy", tmp_path / "results")


@pytest.mark.parametrize("damage", [edit("epoch", drop=True), binary, cut_mid_row], ids=lambda d: d.__name__)
def test_run_warm_started_from_a_damaged_curves_csv_is_one_line(tmp_path, monkeypatch, capsys, blob_csv, damage):
    monkeypatch.chdir(tmp_path)
    old = space_from(tmp_path, "old", "\n  model: basic\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    write_earlier(tmp_path / "results", "old-1", old, EARLIER[:2])
    damage(tmp_path / "results" / "old-1" / "curves.csv")
    space = sweep_yaml(tmp_path, "new", FAST + "  lr: {loguniform: [1.0e-4, 1.0e-2]}\n", samples=1)
    argv = ["run", str(space), "--name", "w1", "--warm-start", "old-1", "--any-data", "--no-track"]
    assert main([*argv, "--data", str(blob_csv), "--storage", str(tmp_path / "ray")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "results/old-1/curves.csv: " in err, err


def missing(path):
    path.unlink()


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("sweep.json", cut_mid_row, "sweep.json: not valid JSON"),
        ("sweep.json", edit_json(lambda m: m["space"]["budget"].update(max_epochs=-3)),
         "sweep.json: its space no longer validates (budget.max_epochs: "),
        ("sweep.json", edit_json(lambda m: m["space"]["space"][0].update(kind="gaussian")),
         "sweep.json: its space no longer validates (space.0.kind: "),
        ("trials.csv", missing, "trials.csv: not found; the results folder is incomplete"),
        ("trials.csv", binary, "trials.csv: unreadable"),
    ],
    ids=["sweep-json-cut", "space-invalid-now", "space-unknown-kind", "trials-missing", "trials-binary"],
)  # fmt: skip
def test_train_again_from_a_damaged_folder_is_one_line_and_trains_nothing(results, capsys, name, damage, message):
    """`fer-tune train --trial` reads the same files through the same checks: a crash's or an old version's
    leftovers are one line naming the file, before any training."""
    damage(results / name)
    assert main(["train", "--trial", f"{NAME}/a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: ") and err.count("\n") == 1 and message in err, err
    assert not (results.parent.parent / "checkpoints").exists() and "Traceback" not in err


def test_a_report_it_cannot_write_is_one_line_naming_the_path(results, capsys):
    """A directory where report.html goes: the path and the reason, exit 1, no traceback."""
    (results / "report.html").mkdir()
    assert main(["report", NAME]) == 1
    err = capsys.readouterr().err
    assert err == f"fer-tune: error: results/{NAME}/report.html: Is a directory\n", err


def test_a_read_only_results_folder_is_one_line_naming_the_path(pristine):
    """A results folder this user may not write (chmod a-w; as root, whom modes do not stop, the command runs as
    nobody): `fer-tune report` names the file it could not write and exits 1."""
    import os
    import stat
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="fer-tune-read-only-"))  # not under pytest's root-only temp folder
    try:
        shutil.copytree(pristine, root / "results")
        for path in [root, *root.rglob("*")]:
            path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH if path.is_dir()
                       else stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)  # fmt: skip
        folder = root / "results" / NAME
        folder.chmod(0o555)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        home = root / "home"  # the user's own, writable: matplotlib's and fer-tune's caches
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "FER_TUNE_CACHE": str(home / "cache")}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        done = subprocess.run([*as_user, sys.executable, "-m", "fer_tune.cli", "report", NAME], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr == f"fer-tune: error: results/{NAME}/report.json: Permission denied\n", done.stderr
        assert not (folder / "report.json").exists()
    finally:
        if (root / "results" / NAME).exists():
            (root / "results" / NAME).chmod(0o755)
        shutil.rmtree(root)
