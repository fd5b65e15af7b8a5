"""What every benchmark shares: the machine it ran on, JSON-line results, the README table.

Each figure is one JSON line appended to results/bench/<bench>.json:

    {"bench": "pipeline", "figure": "trans4/ratio", "value": 12.3, "unit": "x", "mode": "short",
     "target": ">= 10", "machine": {...}, "timestamp": "2025-01-01T12:00:00", ...}

A figure that cannot be measured here (no GPU) is recorded with value null and a note.
`write_readme()` turns the latest line of every figure into results/bench/README.md.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
NO_GPU = "not measured here: no GPU lent to this task"
REPRODUCE = {  # the command behind each bench's figures (add --full for the real sizes)
    "pipeline": ".venv/bin/python -m bench.pipeline",
    "trial": ".venv/bin/python -m bench.trial",
    "sweep": ".venv/bin/python -m bench.sweep",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine a figure was measured on, including how busy it was."""
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # well above 0 at rest: other work shares the CPU
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if cuda else "none",
    }


def describe(info: dict, load: bool = True) -> str:
    gpu = "no GPU" if info["gpu"] == "none" else info["gpu"]
    busy = f" (load {info['load_average_1min']})" if load else ""
    return f"{info['cpu']}, {info['cores']} cores{busy}, {gpu}, torch {info['torch']}"


def git_commit() -> str:
    """HEAD, '+dirty' when the tree has changes; 'unknown' where there is no git (a copied tree: pass --commit)."""
    git = {"capture_output": True, "text": True, "cwd": ROOT}  # the tree measured, wherever the bench ran from
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=True, **git).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], **git).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


class Recorder:
    """Appends one JSON line per figure to `out_dir/<bench>.json` and prints it; every line names the commit
    measured (`commit`, else git's HEAD, '+dirty' where the tree has changes) so it is reproducible from the tree."""

    def __init__(self, bench: str, mode: str, out_dir: Path | str | None = None, commit: str | None = None):
        self.bench, self.mode, self.commit = bench, mode, commit or git_commit()
        self.out_dir = Path(out_dir or RESULTS)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.machine = machine()
        print(f"[bench.{bench}] {mode} mode on {describe(self.machine)}", flush=True)

    def __call__(self, figure: str, value, unit: str, target: str | None = None, **details) -> dict:
        line = {
            "bench": self.bench,
            "figure": figure,
            "value": None if value is None else round(float(value), 4),
            "unit": unit,
            "mode": self.mode,
            "commit": self.commit,
            **({"target": target} if target else {}),
            **details,
            "machine": {**self.machine, "load_average_1min": round(os.getloadavg()[0], 2)},  # load when measured
            "timestamp": datetime.now().isoformat(timespec="seconds"),
        }
        with open(self.out_dir / f"{self.bench}.json", "a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps({k: v for k, v in line.items() if k != "machine"}), flush=True)
        return line

    def not_measured(self, figure: str, unit: str, target: str | None = None, why: str = NO_GPU) -> dict:
        return self(figure, None, unit, target, note=why)


def latest(out_dir: Path | str | None = None) -> list[dict]:
    """The newest line of every (bench, figure) in out_dir, in file order."""
    figures: dict[tuple[str, str], dict] = {}
    for path in sorted(Path(out_dir or RESULTS).glob("*.json")):
        for text in path.read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                figures[(line["bench"], line["figure"])] = line
    return list(figures.values())


def _shown(value, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("images/s", "MB") or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def meets(value, target: str | None) -> bool | None:
    """Whether value meets a target written as '>= 10', '<= 15', '< 1' or '> 0'."""
    if value is None or not target:
        return None
    op, bound = target.split()
    compare = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}[op]
    return compare(float(value), float(bound))


def write_readme(out_dir: Path | str | None = None) -> Path:
    """results/bench/README.md: one table of the latest figures, and how to reproduce them."""
    out_dir = Path(out_dir or RESULTS)
    lines = latest(out_dir)
    machines: dict[str, str] = {}  # description -> short name
    for line in lines:
        machines.setdefault(describe(line["machine"], load=False), f"M{len(machines) + 1}")
    rows = ["| bench | figure | value | unit | target | met | mode | machine (load) | measured |", "|" + "---|" * 9]
    for line in lines:
        met = {True: "yes", False: "**no**", None: ""}[meets(line["value"], line.get("target"))]
        value = _shown(line["value"], line["unit"]) if line["value"] is not None else line.get("note", "—")
        rows.append(
            f"| {line['bench']} | {line['figure']} | {value} | {line['unit']} | {line.get('target', '')} | {met} "
            f"| {line['mode']} | {machines[describe(line['machine'], load=False)]} "
            f"({line['machine']['load_average_1min']}) | {line['timestamp']} |"
        )
    benches = sorted({line["bench"] for line in lines})
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "The latest value of every figure in " + ", ".join(f"`{b}.json`" for b in benches) + " (one JSON line",
            "per measurement, with its settings and definitions; see the docstrings in bench/ for what each",
            "figure times). Timings are wall clock; the 1-minute load average when the figure was",
            "recorded says how busy the machine was (it includes the bench itself: up to ~2 on 2 cores).",
            "`short` figures come from the default, shrunken runs, `full` ones from `--full`.",
            "",
            "Reproduce: `make bench` (short) or `make bench BENCH_ARGS=--full`; one bench alone:",
            *[f"- {bench}: `{REPRODUCE.get(bench, '.venv/bin/python -m bench.' + bench)}`" for bench in benches],
            "",
            "Machines: " + "; ".join(f"{short}: {description}" for description, short in machines.items()),
            "",
            *rows,
            "",
        ]
    )
    path = out_dir / "README.md"
    path.write_text(text)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


MALLOC_TUNING = "glibc mallopt: M_MMAP_THRESHOLD 64 MiB, M_TRIM_THRESHOLD 256 MiB"


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS (False where not glibc).

    By default glibc maps each allocation over its (adaptive) threshold fresh from the OS and
    trims the heap eagerly, so a loop over batches can fault in every page of its
    [B, 2, 48, 48] temporaries again each call: measured 500-1,500 minor faults and 3x the time
    per augmentation call at batch 64 on the 2-core bench machine.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20))
