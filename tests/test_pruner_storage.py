"""ASHA's state file (for --resume) goes where Ray's storage is: a local path, or a URI through pyarrow.

`--storage s3://bucket/fer-tune` once wrote it to a local folder named `s3:` (Path("s3://b") is
"s3:/b"). No object store runs here: a file:// URI takes the same pyarrow path as s3://.
"""

from pathlib import Path

from fer_tune.search.pruners import STATE_FILE, PersistentASHA, build_pruner, state_path
from fer_tune.search.sweep_file import load_space

SPACE = """name: asha
pruner: {name: asha, grace_period: 1, reduction_factor: 2}
budget: {num_samples: 4, max_epochs: 4}
space: {model: basic}
"""


def asha(state_dir: str, space_dir: Path) -> PersistentASHA:
    (space_dir / "asha.yaml").write_text(SPACE)
    return build_pruner(load_space(space_dir / "asha.yaml"), state_dir=state_dir)


def test_an_object_store_path_stays_a_uri():
    assert state_path("s3://bucket/fer-tune/sweep") == f"s3://bucket/fer-tune/sweep/{STATE_FILE}"
    assert state_path("gs://bucket/sweep/") == f"gs://bucket/sweep/{STATE_FILE}"
    assert state_path("results/ray/sweep") == f"results/ray/sweep/{STATE_FILE}"


def test_the_state_is_saved_and_read_back_through_a_uri(workdir):
    pruner = asha(f"file://{workdir}/store/sweep", workdir)
    pruner._stopped.add("trial-1")  # a decision to keep
    pruner._decisions[("trial-1", 1)] = pruner.STOP
    pruner._save()
    assert (workdir / "store" / "sweep" / STATE_FILE).is_file()
    assert sorted(p.name for p in workdir.iterdir()) == ["asha.yaml", "store"]  # no local `file:` folder

    restored = asha(f"file://{workdir}/store/sweep", workdir)
    restored._load()
    assert restored._stopped == {"trial-1"} and restored._decisions == {("trial-1", 1): restored.STOP}
