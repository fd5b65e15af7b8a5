"""Run hostile-but-ordinary inputs against `fer-tune` as real processes and classify each outcome (issue 16).

    .venv/bin/python tools/hostile.py --label after                             # this tree
    git worktree add --detach /tmp/hostile-before 87d5422
    .venv/bin/python tools/hostile.py --tree /tmp/hostile-before --label before # an older tree
    .venv/bin/python tools/hostile.py --compare /tmp/hostile-before.jsonl /tmp/hostile-after.jsonl

Each case runs `python -m fer_tune.cli ARGV` one at a time in /tmp/hostile/LABEL/CASE/work, with
PYTHONPATH=TREE, its own HOME and RAY_TMPDIR, no MLflow or Ray variables but its own, stdin closed,
60 s at most. The outcome, first match wins: leak (SECRET in the output or a file), escape (a file
outside work/results/ and the case's own outputs), traceback, hang (timed out), absent (the tree's
argparse lacks the command or flag); then for input that should be refused: silent (accepted), late
(Ray started, or slower than the import time plus the case's allowance, 15 s by default), noisy (more
than one line besides argparse's usage), misleading (the line does not match the case's `says`:
the flag, file or value at fault), clean; for valid input: ok or wrong.

A case marked `guard` runs with `--address 127.0.0.1:1`, where nothing listens: a space file that
loads is then refused for that address, so it never trains, and naming the address means "accepted".
Cases without the guard use a tiny copy of the tree's quick.yaml (200 images, 1 trial of 2 epochs),
so a tree that accepts a bad flag trains that for under a minute, not a real sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Sekr1t-pw"  # the credential every case that carries one uses (not a word messages use: SECRET_ACCESS_KEY)
GUARD = "127.0.0.1:1"  # nothing listens on port 1 (the loading trick)
GUARD_SAID = re.compile(r"127\.0\.0\.1:1(?!\d)")
TIMEOUT_S = 60
TOKEN_URI = f"http://127.0.0.1:9/?token={SECRET}"  # nothing listens on port 9 either
LONGEST_LINE = 2000  # a refusal longer than this is noise, however few its lines (an alias bomb's 58 MB)
OUTCOMES = ("leak", "escape", "traceback", "crash", "hang", "absent", "silent", "late", "noisy", "misleading",
            "clean", "ok", "wrong")  # fmt: skip
ABSENT = re.compile(r"unrecognized arguments:|invalid choice:")  # argparse, on a command or flag it lacks

Setup = Callable[[Path, dict], None]  # (the case's work folder, the tiny space as a dict)


@dataclass
class Case:
    id: str
    cls: str  # the class: security, traceback, silent, misleading, late (or other)
    argv: list[str]  # after `fer-tune`; "{case}" becomes the case's folder
    says: str = ""  # a regex a good one-line refusal matches: the flag, file or value at fault, or what it is
    expect: str = "error"  # "error": should be refused; "ok": should be accepted
    setup: Setup | None = None
    env: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()  # paths under work/ it may create besides results/
    guard: bool = False  # add --address GUARD: it never trains, and naming GUARD means accepted
    late_s: float = 15.0  # seconds of its own (beyond the import baseline) after which a refusal is late
    parses: bool = True  # this tree's parser takes its argv (False: an unknown flag is the point of it)


# ---------------------------------------------------------------- setups: files a case starts with


def tiny_space(tree: Path) -> dict:
    """The tree's quick.yaml, shrunk so that an accidental sweep is 1 trial of 2 epochs on 200 images."""
    spec = yaml.safe_load((tree / "search_spaces" / "quick.yaml").read_text())
    spec["data"] = {**spec.get("data", {}), "n": 200}
    spec["budget"] = {"num_samples": 1, "max_epochs": 2, "max_concurrent": 1}
    return spec


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both_dicts else value
    return out


def space(file: str = "q.yaml", encoding: str = "utf-8", extra: str = "", **changes) -> Setup:
    """The tiny space with `changes` merged in (and `extra` text appended), saved as `file`."""

    def write(work: Path, base: dict) -> None:
        text = yaml.safe_dump(merged(base, changes), sort_keys=False) + extra
        (work / file).write_bytes(text.replace("{case}", str(work.parent)).encode(encoding))  # utf-16: BOM first

    return write


def raw(file: str, content: bytes | str) -> Setup:
    def write(work: Path, base: dict) -> None:
        path = work / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return write


def folder(name: str) -> Setup:
    return lambda work, base: (work / name).mkdir(parents=True)


def fifo(name: str) -> Setup:
    return lambda work, base: os.mkfifo(work / name)


def together(*setups: Setup) -> Setup:
    def each(work: Path, base: dict) -> None:
        for setup in setups:
            setup(work, base)

    return each


def png(width: int = 48, height: int = 48, pretend: tuple[int, int] | None = None) -> bytes:
    """A grey PNG; with `pretend`, its header claims that size (CRC recomputed): a decompression bomb's shape."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    data = bytearray(out.getvalue())
    if pretend:
        data[16:24] = struct.pack(">II", *pretend)  # IHDR: length 8:12, type 12:16, width and height 16:24
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def fer_csv(rows: int = 10) -> str:
    pixels = " ".join(["128"] * 2304)
    usage = ["Training"] * (rows - 4) + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    return "emotion,pixels,Usage\n" + "".join(f"{i % 7},{pixels},{u}\n" for i, u in enumerate(usage))


SWEEP_JSON = json.dumps({"name": "s1", "space": {"name": "q", "metric": "val_accuracy", "mode": "max",
                                                  "path": "q.yaml"}})  # fmt: skip
TRIALS_CSV = "trial_id,model,lr,best_val_accuracy,best_epoch,epochs_run,status\nt1,vgg,0.001,0.5,1,2,completed\n"


def sweep(where: str, sweep_json: str | None = SWEEP_JSON, trials: str | None = TRIALS_CSV) -> Setup:
    """A finished sweep's results folder at work/`where` (None: that file left out)."""
    files = {"sweep.json": sweep_json, "trials.csv": trials}
    return together(folder(where), *(raw(f"{where}/{name}", text) for name, text in files.items() if text is not None))


FIXTURE_SPACE = """name: fixture
trainable: curve
search: {algorithm: grid}
pruner: {name: none}
budget: {num_samples: 1, max_epochs: 2}
data: {source: synthetic, n: 200}
space:
  model: basic
  batch_size: {grid: [16, 32]}
  lr: 1.0e-3
"""
FIXTURE = Path("/tmp/hostile/fixture")  # results/s1, a real (curve) sweep's folder: made once, by ROOT's tree


def finished_sweep() -> Path:
    """results/s1 of a real sweep (2 curve trials, searching batch_size only), run once by this repository's
    tree whichever tree is under test: the damage cases start from it."""
    folder = FIXTURE / "results" / "s1"
    if not (folder / "report.html").is_file():
        shutil.rmtree(FIXTURE, ignore_errors=True)
        FIXTURE.mkdir(parents=True)
        (FIXTURE / "fixture.yaml").write_text(FIXTURE_SPACE)
        env = case_env(ROOT, FIXTURE / "home", Path("/tmp/hr-fixture"), {})
        (FIXTURE / "home").mkdir()
        command = [sys.executable, "-m", "fer_tune.cli", "run", "fixture.yaml", "--no-track", "--name", "s1"]
        subprocess.run(command, cwd=FIXTURE, env=env, check=True, capture_output=True, timeout=600)
    return folder


def damaged(edit: Callable[[Path], None] | None = None, name: str = "s1") -> Setup:
    """The fixture sweep at work/results/`name`, with `edit` applied to that folder."""

    def write(work: Path, base: dict) -> None:
        shutil.copytree(finished_sweep(), work / "results" / name)
        if edit is not None:
            edit(work / "results" / name)

    return write


def cut(file: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: len(data) // 2])

    return edit


def replaced(file: str, content: bytes | None) -> Callable[[Path], None]:
    """`file` replaced by `content` (None: removed; b"/": a directory in its place)."""

    def edit(folder: Path) -> None:
        (folder / file).unlink()
        if content == b"/":
            (folder / file).mkdir()
        elif content is not None:
            (folder / file).write_bytes(content)

    return edit


def registry(*models: str, sweep_run: str | None = None) -> Setup:
    """results/mlflow.db holding registered `models` (a promotion lock is one), and with `sweep_run` a sweep
    of that name in experiment `quick` (the tiny space's), as a finished tracked sweep leaves them."""

    def write(work: Path, base: dict) -> None:
        from mlflow import MlflowClient

        (work / "results").mkdir(exist_ok=True)
        client = MlflowClient(f"sqlite:///{work / 'results' / 'mlflow.db'}")
        for model in models:
            client.create_registered_model(model, tags={"owner": "dead-promoter", "host": "gone:1"})
        if sweep_run:
            experiment = client.create_experiment("quick")
            client.create_run(experiment, tags={"fer_tune.sweep": sweep_run, "fer_tune.role": "sweep"})
        Q(work, base)

    return write


DEEP_YAML = "name: deep\nspace:\n  model: " + "[" * 5000 + "]" * 5000 + "\n"
BOMB_YAML = "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9 if p else ["lol"] * 9) + "]\n"
                    for p, c in zip(["", *"abcdefg"], "abcdefgh")) + "name: *h\n"  # fmt: skip
MERGE_YAML = (  # a block shared by merge key (<<: *anchor), as people share them between parameters
    "name: merged\nspace:\n  model: basic\n  lr: &range {loguniform: [1.0e-4, 1.0e-2], default: 1.0e-3}\n"
    "  weight_decay: {<<: *range, default: 1.0e-4}\n"
)
SPECIAL_PASSWORD = f"{SECRET}/#?@x"  # /, #, ? and @ end a naive URL parser's userinfo early


# ---------------------------------------------------------------- the cases

RUN = ["run", "q.yaml", "--no-track"]  # a tiny sweep, untracked
RUN_TRACKED = ["run", "q.yaml"]
Q = space()
OUTSIDE = together(folder("results"), sweep("x"))  # a sweep at results/../x


def cases() -> list[Case]:
    store = {"MLFLOW_TRACKING_URI": TOKEN_URI}
    img = raw("img.png", png())
    # fmt: off
    return [
        # security: names that become paths, credentials in URIs
        Case("sec-name-dotdot-escaped", "security", RUN + ["--name", "../escaped"], r"--name", setup=Q),
        Case("sec-space-name-dotdot", "security", RUN, r"name.*\.\./\.\./x", setup=space(name="../../x")),
        Case("sec-space-name-absolute", "security", RUN, r"name", setup=space(name="{case}/abs")),
        Case("sec-name-slash", "security", RUN + ["--name", "a/b"], r"--name", setup=Q),
        Case("sec-name-newline", "security", RUN + ["--name", "a\nb"], r"--name", setup=Q),
        Case("sec-name-dotdot-only", "security", RUN + ["--name", ".."], r"--name", setup=Q),
        Case("sec-name-300-chars", "security", RUN + ["--name", "n" * 300], r"--name", setup=Q),
        Case("sec-name-empty", "security", RUN + ["--name", ""], r"--name", setup=Q),
        Case("sec-name-space", "security", RUN + ["--name", "a b"], r"--name", setup=Q),
        Case("sec-name-absolute", "security", RUN + ["--name", "{case}/abs"], r"--name", setup=Q),
        Case("sec-results-dotdot", "security", ["results", "../x"], r"\.\./x|NAME", setup=OUTSIDE),
        Case("sec-results-sync-dotdot", "security", ["results", "sync", "../x"], r"\.\./x|NAME", setup=OUTSIDE),
        Case("sec-report-dotdot", "security", ["report", "../x"], r"\.\./x|NAME", setup=OUTSIDE),
        Case("sec-train-trial-dotdot", "security", ["train", "--trial", "../x/t1"], r"--trial|\.\./x",
             setup=OUTSIDE),
        Case("sec-run-token-uri", "security", RUN_TRACKED, r"127\.0\.0\.1:9|MLflow", setup=Q, env=store),
        Case("sec-storage-secret-key", "security", RUN + ["--storage", f"s3://bucket/x?secret_key={SECRET}"],
             r"--storage", setup=Q),
        Case("sec-run-userinfo-uri", "security", RUN_TRACKED, r"127\.0\.0\.1:9|MLflow", setup=Q,
             env={"MLFLOW_TRACKING_URI": f"http://user:{SECRET}@127.0.0.1:9"}),
        Case("sec-models-list-token-uri", "security", ["models", "list"], r"127\.0\.0\.1:9|MLflow", env=store),
        Case("sec-predict-token-uri", "security", ["predict", "img.png"], r"127\.0\.0\.1:9|MLflow", setup=img,
             env=store),
        # traceback family: inputs that once raised
        Case("tb-space-utf16-bom", "traceback", RUN, expect="ok", setup=space(encoding="utf-16"), guard=True),
        Case("tb-space-latin1", "traceback", RUN, r"q\.yaml.*(UTF-8|encod|Latin)", guard=True,
             setup=space(encoding="latin-1", extra="# visage ému: a comment in Latin-1\n")),
        Case("tb-results-truncated-json", "traceback", ["results", "s1"], r"sweep\.json",
             setup=sweep("results/s1", sweep_json='{"name": "x", "tri')),
        Case("tb-results-empty-trials", "traceback", ["results", "s1"], r"trials\.csv",
             setup=sweep("results/s1", trials="")),
        Case("tb-results-no-sweep-json", "traceback", ["results", "s1"], r"sweep\.json",
             setup=sweep("results/s1", sweep_json=None)),
        Case("tb-address-notaport", "traceback", RUN + ["--address", "host:notaport"], r"--address.*notaport",
             setup=Q),
        Case("tb-ray-address-garbage", "traceback", RUN, r"RAY_ADDRESS.*garbage", setup=Q,
             env={"RAY_ADDRESS": "garbage"}),
        Case("tb-synth-dev-full", "traceback", ["data", "synth", "--out", "/dev/full", "--n", "100"],
             r"/dev/full.*(space|full|write)"),
        Case("tb-synth-seed-negative", "traceback", ["data", "synth", "--out", "s.csv", "--seed", "-1"],
             r"--seed", allowed=("s.csv",)),
        Case("tb-synth-n-1e13", "traceback", ["data", "synth", "--out", "s.csv", "--n", "1e13"], r"--n\b",
             allowed=("s.csv",)),
        Case("tb-space-n-1e15", "traceback", RUN, r"\bn\b", setup=space(data={"n": 1e15}), guard=True),
        Case("tb-predict-bomb", "traceback", ["predict", "bomb.png"], r"bomb\.png.*(pixel|large|big)",
             setup=raw("bomb.png", png(pretend=(60000, 60000)))),
        Case("tb-serve-upload-nan", "traceback", ["serve", "--max-upload-mb", "nan"], r"--max-upload-mb"),
        Case("tb-space-tab-indent", "traceback", RUN, r"q\.yaml.*(line|tab)", guard=True,
             setup=raw("q.yaml", "name: q\nbudget:\n\tnum_samples: 2\n")),
        Case("tb-space-duplicate-key", "traceback", RUN, r"budget|duplicate", guard=True,
             setup=space(extra="budget: {num_samples: 50, max_epochs: 30}\n")),
        Case("tb-predict-empty", "traceback", ["predict", "empty.png"], r"empty\.png.*(empty|0 bytes)",
             setup=raw("empty.png", b"")),
        Case("tb-warm-start-truncated-json", "traceback", RUN + ["--warm-start", "s1"], r"sweep\.json",
             setup=together(Q, sweep("results/s1", sweep_json='{"name": "x", "tri'))),
        Case("tb-warm-start-empty-trials", "traceback", RUN + ["--warm-start", "s1"], r"trials\.csv",
             setup=together(Q, sweep("results/s1", trials=""))),
        # silent family: values taken without a word
        *[Case(f"sil-cpus-{v}", "silent", RUN + ["--cpus-per-trial", v], r"--cpus-per-trial", setup=Q)
          for v in ("nan", "inf", "-1", "0")],
        Case("sil-gpus-nan", "silent", RUN + ["--gpus-per-trial", "nan"], r"--gpus-per-trial", setup=Q),
        Case("sil-serve-port-99999", "silent", ["serve", "--port", "99999"], r"--port|99999"),
        Case("sil-serve-port-negative", "silent", ["serve", "--port", "-1"], r"--port|-1"),
        Case("sil-ui-port-0", "silent", ["ui", "--port", "0"], r"--port"),
        Case("sil-storage-bogus", "silent", RUN + ["--storage", "bogus://x"], r"--storage.*bogus", setup=Q),
        Case("sil-storage-no-bucket", "silent", RUN + ["--storage", "s3://fer-tune-no-such-bucket-424242/x"],
             r"--storage", setup=Q),
        Case("sil-mlflow-garbage", "silent", RUN_TRACKED, r"garbage", setup=Q,
             env={"MLFLOW_TRACKING_URI": "garbage://x"}),
        Case("sil-mlflow-sqlite-text", "silent", RUN_TRACKED, r"notes\.txt",
             setup=together(Q, raw("notes.txt", "remember the milk\n")),
             env={"MLFLOW_TRACKING_URI": "sqlite:///notes.txt"}),
        Case("sil-space-samples-1e30", "silent", RUN, r"num_samples", setup=space(budget={"num_samples": 1e30}),
             guard=True),
        Case("sil-space-cpu-nan", "silent", RUN, r"cpu", setup=space(resources={"cpu": float("nan")}), guard=True),
        Case("sil-max-epochs-1e9", "silent", RUN + ["--max-epochs", "1000000000"], r"--max-epochs", setup=Q),
        *[Case(f"sil-num-samples-{v}", "silent", RUN + ["--num-samples", v], r"--num-samples", setup=Q)
          for v in ("0", "-3", "abc")],
        Case("sil-smoke-num-samples", "silent", RUN + ["--smoke", "--num-samples", "5"], r"--smoke|--num-samples",
             setup=Q),
        Case("sil-results-top-0", "silent", ["results", "s1", "--top", "0"], r"--top", setup=sweep("results/s1")),
        Case("sil-synth-n-0", "silent", ["data", "synth", "--out", "s.csv", "--n", "0"], r"--n\b",
             allowed=("s.csv",)),
        Case("sil-any-data-alone", "silent", RUN + ["--any-data"], r"--any-data", setup=Q),
        # an empty value, as `--data "$UNSET"` gives: refused, or silently the default?
        *[Case(f"sil-{flag}-empty", "silent", RUN + [f"--{flag}", ""], f"--{flag}", setup=Q, guard=True)
          for flag in ("data", "storage", "warm-start")],
        Case("sil-address-empty", "silent", RUN + ["--address", ""], r"--address", setup=Q),
        # misleading family: the message must name what is wrong
        Case("mis-data-gzip", "misleading", RUN + ["--data", "data.csv"], r"data\.csv.*(gzip|compress)",
             setup=together(Q, raw("data.csv", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4))),
        Case("mis-data-binary", "misleading", RUN + ["--data", "data.csv"], r"data\.csv.*(binary|not .*text|UTF)",
             setup=together(Q, raw("data.csv", bytes((i * 7919) % 251 for i in range(4096))))),
        Case("mis-data-empty", "misleading", RUN + ["--data", "data.csv"], r"data\.csv.*empty",
             setup=together(Q, raw("data.csv", b""))),
        Case("mis-data-10-pixels", "misleading", RUN + ["--data", "data.csv"], r"data\.csv.*(pixels|2304|48)",
             setup=together(Q, raw("data.csv", "emotion,pixels,Usage\n3,1 2 3 4 5 6 7 8 9 10,Training\n"))),
        Case("mis-space-folder", "misleading", ["run", "sp", "--no-track"], r"sp\b.*(folder|directory)",
             setup=folder("sp"), guard=True),
        Case("mis-space-fifo", "misleading", ["run", "sp.yaml", "--no-track"], r"sp\.yaml.*(FIFO|pipe|regular)",
             setup=fifo("sp.yaml"), guard=True),
        Case("mis-space-dev-null", "misleading", ["run", "/dev/null", "--no-track"],
             r"/dev/null.*(device|regular|empty)", guard=True),
        Case("mis-space-missing", "misleading", ["run", "nope.yaml", "--no-track"],
             r"nope\.yaml.*(not found|no such|does not exist)", guard=True),
        Case("mis-space-empty", "misleading", ["run", "e.yaml", "--no-track"], r"e\.yaml.*(empty|mapping)",
             setup=raw("e.yaml", b""), guard=True),
        Case("mis-space-list", "misleading", ["run", "l.yaml", "--no-track"], r"l\.yaml.*(mapping|list)",
             setup=raw("l.yaml", "- name: q\n- budget: {}\n"), guard=True),
        Case("mis-predict-folder", "misleading", ["predict", "somedir/"], r"somedir.*(folder|directory)",
             setup=folder("somedir")),
        Case("mis-predict-missing", "misleading", ["predict", "missing.png"],
             r"missing\.png.*(no such|not found|does not exist)"),
        Case("mis-predict-text", "misleading", ["predict", "notes.txt"], r"notes\.txt.*(image|text)",
             setup=raw("notes.txt", "remember the milk\n")),
        Case("mis-space-unknown-key", "misleading", RUN, r"bugdet", setup=space(bugdet={"num_samples": 2}),
             guard=True),
        Case("mis-space-lr-reversed", "misleading", RUN, r"\blr\b",
             setup=space(space={"lr": {"loguniform": [1.0e-2, 1.0e-4]}}), guard=True),
        Case("mis-space-data-missing", "misleading", RUN, r"nosuch\.csv", setup=space(data={"source": "nosuch.csv"})),
        Case("mis-unknown-flag-set", "misleading", RUN + ["--set", "lr=0.1"], r"--set", setup=Q, parses=False),
        Case("mis-train-missing-space", "misleading", ["train", "missing.yaml"], r"missing\.yaml"),
        Case("mis-train-set-unknown", "misleading", ["train", "q.yaml", "--set", "nosuch=1"], r"nosuch", setup=Q),
        Case("mis-train-set-bad-value", "misleading", ["train", "q.yaml", "--set", "lr=abc"], r"\blr\b|abc",
             setup=Q),
        Case("mis-models-download-dev-null", "misleading",
             ["models", "download", "models:/fer-emotion@champion", "--to", "/dev/null"], r"--to|/dev/null"),
        Case("mis-synth-out-folder", "misleading", ["data", "synth", "--out", "outdir", "--n", "100"],
             r"outdir.*(folder|directory)", setup=folder("outdir")),
        Case("mis-inspect-missing", "misleading", ["data", "inspect", "nosuch.csv"], r"nosuch\.csv"),
        Case("mis-clean-out-is-source", "misleading", ["data", "clean", "d.csv", "--out", "d.csv"],
             r"--out.*(same|source|exists)|d\.csv.*(same|source|exists)", setup=raw("d.csv", fer_csv())),
        Case("mis-resume-nothing", "misleading", RUN + ["--resume"], r"--resume", setup=Q),
        Case("mis-serve-bad-host", "misleading", ["serve", "--host", "999.1.1.1"], r"999\.1\.1\.1"),
        # late family: refused, but only after Ray or after a long wait
        Case("late-address-unroutable", "late", RUN + ["--address", "10.255.255.1:6379"], r"10\.255\.255\.1",
             setup=Q, late_s=8),
        Case("late-grid-continuous", "late", RUN, r"\blr\b", setup=space(search={"algorithm": "grid"})),
        Case("late-data-wrong-columns", "late", RUN + ["--data", "data.csv"], r"data\.csv.*(column|header)",
             setup=together(Q, raw("data.csv", "a,b,c\n1,2,3\n4,5,6\n"))),
        Case("late-space-10mb", "late", ["run", "big.yaml", "--no-track"], r"big\.yaml.*(bytes|kB|MB|large)",
             setup=space("big.yaml", extra="notes:\n" + "  - 0\n" * 1_750_000), guard=True, late_s=5),
        Case("late-warm-start-dotdot", "late", RUN + ["--warm-start", "../x"], r"--warm-start|\.\./x",
             setup=together(Q, OUTSIDE)),
        Case("late-warm-start-missing", "late", RUN + ["--warm-start", "nosuch"], r"nosuch", setup=Q),
        # valid inputs: what the harness itself relies on
        Case("ok-space-minimal", "other", RUN, expect="ok", setup=Q, guard=True),
        Case("ok-space-utf8-bom", "other", RUN, expect="ok", setup=space(encoding="utf-8-sig"), guard=True),
        Case("ok-results-fixture", "other", ["results", "s1"], expect="ok", setup=sweep("results/s1")),
        Case("ok-synth-small", "other", ["data", "synth", "--out", "s.csv", "--n", "100"], expect="ok",
             allowed=("s.csv",)),
        # round 3 (issue 26): the classes of its eight parts
        # 1-2. the promotion lock; features that broke the first time they were used
        Case("r3-lock-models-list", "lock", ["models", "list"], expect="ok",
             setup=registry("fer-emotion", "fer-emotion.promotion-lock")),
        Case("r3-feat-nsga2-random", "feature", RUN, r"sampler", guard=True,
             setup=space(search={"algorithm": "random", "sampler": "nsga2"})),
        Case("r3-feat-separable-transfer", "feature",
             ["train", "q.yaml", "--set", "model=resnet18", "--set", "width=1.0", "--set", "separable=true"],
             r"separable", setup=Q),
        Case("r3-feat-search-seed-negative", "feature", RUN, r"search\.seed", guard=True,
             setup=space(search={"seed": -1})),
        Case("r3-feat-seed-beyond-64-bits", "feature", ["train", "q.yaml", "--set", f"seed={2**70}"], r"seed",
             setup=Q),
        Case("r3-feat-width-1e7", "feature", ["train", "q.yaml", "--set", "width=1e7"], r"width", setup=Q),
        # 3. credentials: any character in a password, a password in the space file, a secret in a storage query
        Case("r3-cred-password-specials", "credentials", RUN_TRACKED, r"127\.0\.0\.1:9|MLflow", setup=Q,
             env={"MLFLOW_TRACKING_URI": f"http://alice:{SPECIAL_PASSWORD}@127.0.0.1:9"}),
        Case("r3-cred-space-file-password", "credentials", RUN_TRACKED, r"127\.0\.0\.1:9|MLflow",
             setup=space(mlflow={"tracking_uri": f"http://alice:{SECRET}@127.0.0.1:9"})),
        Case("r3-cred-storage-file-query", "credentials", RUN + ["--storage", f"file://{{case}}/st?sig={SECRET}"],
             r"--storage", setup=Q),
        # 4. the sweep's own files, damaged
        Case("r3-own-report-curves-cut", "own-files", ["report", "s1"], r"curves\.csv",
             setup=damaged(cut("curves.csv"))),
        Case("r3-own-report-predictions-binary", "own-files", ["report", "s1"], expect="ok",
             setup=damaged(replaced("predictions.csv", b"\x89PNG\r\n\x00\xff"))),
        Case("r3-own-report-sweep-json-binary", "own-files", ["report", "s1"], r"sweep\.json",
             setup=damaged(replaced("sweep.json", b"\xff\xfe\x00binary"))),
        Case("r3-own-warm-start-curves-no-epoch", "own-files", RUN + ["--warm-start", "s1"], r"curves\.csv",
             setup=together(Q, damaged(lambda f: (f / "curves.csv").write_text("trial_id,val_accuracy\nx,0.5\n")))),
        # 5. paths: links out of results/, names inside other arguments, damaged sweeps, unwritable files
        Case("r3-path-results-link-out", "paths", ["report", "s1"], r"s1", setup=together(
            damaged(name="../outside"), lambda work, base: (work / "results" / "s1").symlink_to(work / "outside"))),
        Case("r3-path-trial-quote", "paths", ["train", "--trial", "nosweep/x' OR tags.x = 'y"], r"--trial"),
        Case("r3-path-trial-sweep-json-cut", "paths", ["train", "--trial", "s1/t"], r"sweep\.json",
             setup=damaged(cut("sweep.json"))),
        Case("r3-path-trial-no-trials-csv", "paths", ["train", "--trial", "s1/t"], r"trials\.csv",
             setup=damaged(replaced("trials.csv", None))),
        Case("r3-path-trial-space-invalid", "paths", ["train", "--trial", "s1/t"], r"sweep\.json.*validat",
             setup=damaged(lambda f: (f / "sweep.json").write_text(
                 (f / "sweep.json").read_text().replace('"max_epochs": 2', '"max_epochs": -3')))),
        Case("r3-path-report-html-is-a-folder", "paths", ["report", "s1"], r"report\.html",
             setup=damaged(replaced("report.html", b"/"))),
        Case("r3-path-postgres-bad-port", "paths", ["models", "list"], r"port|99999",
             env={"MLFLOW_TRACKING_URI": "postgresql://u@127.0.0.1:99999/db"}),
        # 6. results lost: a dangling link as the name, a name the store already records
        Case("r3-lost-dangling-link-name", "results-lost", RUN + ["--name", "d"], r"--name d|results/d",
             setup=together(Q, folder("results"), lambda work, base: (work / "results" / "d").symlink_to("/none"))),
        Case("r3-lost-name-in-store", "results-lost", RUN_TRACKED + ["--name", "kept"], r"--name kept",
             setup=registry(sweep_run="kept")),
        # 7. what fer-tune says about itself
        Case("r3-print-home-empty", "self-print", RUN, r"HOME", setup=Q, env={"HOME": ""}, guard=True),
        Case("r3-print-warm-start-shares-nothing", "self-print", RUN + ["--warm-start", "s1"], r"s1|share",
             setup=together(Q, damaged())),
        # 8. contradictions and shapes no one plans for
        Case("r3-contra-random-startup-trials", "contradiction", RUN, r"startup_trials", guard=True,
             setup=space(search={"algorithm": "random", "startup_trials": 5})),
        Case("r3-contra-median-min-rung", "contradiction", RUN, expect="ok", guard=True,
             setup=space(pruner={"name": "median", "min_rung_results": 2})),
        Case("r3-contra-name-ray", "contradiction", RUN + ["--name", "ray"], r"--name", setup=Q),
        Case("r3-shape-yaml-deep", "shape", RUN, r"q\.yaml", setup=raw("q.yaml", DEEP_YAML)),
        Case("r3-shape-alias-bomb", "shape", RUN, r"q\.yaml", setup=raw("q.yaml", BOMB_YAML)),
        Case("r3-shape-merge-keys", "shape", RUN, expect="ok", guard=True, setup=raw("q.yaml", MERGE_YAML)),
        Case("r3-shape-zero-width-key", "shape", RUN, r"\\u200b|mod.*el", guard=True,
             setup=raw("q.yaml", "name: z\nspace:\n  mod\u200bel: basic\n")),
    ]
    # fmt: on


# ---------------------------------------------------------------- running one case


def case_env(tree: Path, home: Path, ray_tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    inherited = ("MLFLOW_", "RAY_", "FER_TUNE_", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(PYTHONPATH=str(tree), HOME=str(home), RAY_TMPDIR=str(ray_tmp), PYTHONDONTWRITEBYTECODE="1")
    return {**env, **extra}


def paths_under(top: Path, skip: tuple[Path, ...] = ()) -> set[Path]:
    found = set()
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        found.update(Path(folder, name) for name in dirs + files)
    return found


def leaked_in(tops: list[Path], inputs: set[Path]) -> str | None:
    """The first regular file under `tops` holding SECRET, the case's own `inputs` (its space file) aside."""
    for top in tops:
        for path in sorted(paths_under(top) - inputs):
            try:
                if stat.S_ISREG(path.lstat().st_mode) and SECRET.encode() in path.read_bytes():
                    return str(path)
            except OSError:
                continue
    return None


def end_processes(proc: subprocess.Popen, ray_tmp: Path) -> None:
    """Kill the case's process group, then any process (Ray's) whose environment names its RAY_TMPDIR.

    SIGKILL, not SIGTERM: Ray's SIGTERM handler prints a traceback, which would read as the case's own.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    mark = f"\0RAY_TMPDIR={ray_tmp}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mark in b"\0" + (entry / "environ").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue


def run_case(case: Case, tree: Path, label: str, index: int, base: dict, import_s: float) -> dict:
    top = Path("/tmp/hostile") / label
    here, ray_tmp = top / case.id, Path(f"/tmp/hr-{label}/{index}")  # Ray's socket paths must stay short
    work, home = here / "work", here / "home"
    for path in (here, ray_tmp):
        shutil.rmtree(path, ignore_errors=True)
    for path in (work, home, ray_tmp):
        path.mkdir(parents=True)
    argv = [a.replace("{case}", str(here)) for a in case.argv] + (["--address", GUARD] if case.guard else [])
    if case.setup:
        case.setup(work, base)
    before, top_before = paths_under(here, skip=(home,)), {p.name for p in top.iterdir()}

    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fer_tune.cli", *argv],
        cwd=work,
        env=case_env(tree, home, ray_tmp, case.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, hung = proc.communicate(timeout=TIMEOUT_S)[0], False
    except subprocess.TimeoutExpired:
        end_processes(proc, ray_tmp)
        output, hung = proc.communicate()[0], True
    seconds = time.monotonic() - started
    end_processes(proc, ray_tmp)

    text = output.decode("utf-8", "replace")
    shown = text.replace(str(here), "<case>")  # so that `says` cannot match the case's own folder name
    created = paths_under(here, skip=(home,)) - before
    mine = [work / "results", *(work / a for a in case.allowed)]
    escaped = sorted(str(p) for p in created if not any(p == m or m in p.parents for m in mine))
    escaped += sorted(str(top / n) for n in {p.name for p in top.iterdir()} - top_before)
    leak = (SECRET in text and "output") or leaked_in([here, ray_tmp], before)
    result = {
        "id": case.id,
        "class": case.cls,
        "expect": case.expect,
        "argv": argv,
        "env": case.env,
        "rc": proc.returncode,
        "seconds": round(seconds, 1),
        "own_seconds": round(seconds - import_s, 1),
        "hung": hung,
        "ray_started": any(ray_tmp.iterdir()),
        "leak": leak,
        "escaped": escaped[:5],
        "lines": [line[:LONGEST_LINE] for line in message_lines(shown)],
        "longest": max(map(len, message_lines(shown)), default=0),
        "output": shown[-4000:],
    }
    result["outcome"] = classify(case, result)
    result["first"] = (result["lines"] or [""])[0][:100]
    return result


def message_lines(text: str) -> list[str]:
    """The output's non-empty lines without argparse's usage block (`usage:` and its indented continuation)."""
    lines, in_usage = [], False
    for line in text.splitlines():
        in_usage = line.startswith("usage:") or (in_usage and line[:1].isspace())
        if line.strip() and not in_usage:
            lines.append(line.rstrip())
    return lines


def classify(case: Case, r: dict) -> str:
    """The outcome; the first that applies wins (see the module docstring)."""
    said = "\n".join(r["lines"])
    accepted = r["rc"] == 0 or (case.guard and GUARD_SAID.search(said) and not re.search(case.says or "$^", said))
    if r["leak"]:
        return "leak"
    if r["escaped"]:
        return "escape"
    if "Traceback" in r["output"]:
        return "traceback"
    if r["hung"]:
        return "hang"
    if r["rc"] < 0:
        return "crash"  # killed by a signal it did not get from us
    if case.parses and ABSENT.search(said):
        return "absent"  # an older tree without this command or flag
    if case.expect == "ok":
        return "ok" if accepted else "wrong"
    if accepted:
        return "silent"
    if r["ray_started"] or r["own_seconds"] > case.late_s:
        return "late"
    if len(r["lines"]) > 1 or r["longest"] > LONGEST_LINE:
        return "noisy"
    if not r["lines"] or not re.search(case.says, r["lines"][0]):
        return "misleading"
    return "clean"


def import_seconds(tree: Path) -> float:
    """How long the libraries a refusal imports take to import here, now (the machine may be busy)."""
    scratch = Path("/tmp/hostile/import")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    code = "import torch, ray, mlflow, pandas, pydantic, fer_tune.cli.main; print(fer_tune.__file__)"
    env = case_env(tree, scratch, scratch, {})
    found = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if not Path(found).is_relative_to(tree):
        raise SystemExit(f"PYTHONPATH={tree} imports fer_tune from {found}, not from that tree")
    return time.monotonic() - started


# ---------------------------------------------------------------- tables


def print_table(records: list[dict]) -> None:
    print(f"{'case':<32} {'class':<10} {'outcome':<10} {'s':>5}  first line")
    for r in records:
        print(f"{r['id']:<32} {r['class']:<10} {r['outcome']:<10} {r['seconds']:>5.1f}  {r['first']!r}")
    print(counts_line(records))


def counts_line(records: list[dict]) -> str:
    counts = Counter(r["outcome"] for r in records)
    return f"{len(records)} cases: " + ", ".join(f"{o} {counts[o]}" for o in OUTCOMES if counts[o])


def compare(before_file: Path, after_file: Path) -> None:
    """Each case's outcome before -> after, and the counts of each outcome."""
    load = lambda f: {r["id"]: r for r in map(json.loads, f.read_text().splitlines())}
    before, after = load(before_file), load(after_file)
    ids = list(after) + [i for i in before if i not in after]
    print(f"{'case':<32} {'class':<10} {'before':<10} {'after':<10} after's first line")
    for i in ids:
        b, a = before.get(i, {}), after.get(i, {})
        cls = a.get("class") or b.get("class")
        print(f"{i:<32} {cls:<10} {b.get('outcome', '-'):<10} {a.get('outcome', '-'):<10} {a.get('first', '')!r}")
    cb, ca = Counter(r["outcome"] for r in before.values()), Counter(r["outcome"] for r in after.values())
    print(f"\n{'outcome':<10} {'before':>6} {'after':>6}")
    for outcome in OUTCOMES:
        if cb[outcome] or ca[outcome]:
            print(f"{outcome:<10} {cb[outcome]:>6} {ca[outcome]:>6}")
    print(f"{'total':<10} {len(before):>6} {len(after):>6}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to run (default: this repository)")
    parser.add_argument("--label", default="after", help="names /tmp/hostile/LABEL/ and the default --out")
    parser.add_argument("--only", default=None, metavar="REGEX", help="only the cases whose id matches")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines (default /tmp/hostile-LABEL.jsonl)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two runs")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return 0
    tree, out = args.tree.resolve(), args.out or Path(f"/tmp/hostile-{args.label}.jsonl")
    chosen = [c for c in cases() if not args.only or re.search(args.only, c.id)]
    import_s = import_seconds(tree)
    print(f"tree {tree}, label {args.label}: {len(chosen)} cases; imports take {import_s:.1f} s here now", flush=True)
    kept = {}  # with --only, the other cases' earlier records stay in --out
    if args.only and out.exists():
        kept = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    base = tiny_space(tree)
    records = []
    for index, case in enumerate(chosen):
        record = {**run_case(case, tree, args.label, index, base, import_s), "import_seconds": round(import_s, 1)}
        records.append(record)
        kept[case.id] = record
        print(f"{case.id:<32} {record['outcome']:<10} {record['seconds']:>5.1f} s  {record['first']!r}", flush=True)
    order = {c.id: n for n, c in enumerate(cases())}
    out.write_text("".join(json.dumps(kept[i]) + "\n" for i in sorted(kept, key=lambda i: order.get(i, len(order)))))
    print()
    print_table(records)
    print(f"records: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
