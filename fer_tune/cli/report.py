"""`fer-tune report [NAME]`: rebuild results/<sweep>/report.html and report.json from that folder alone."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write a sweep's report.html and report.json from results/<sweep>/ (no MLflow needed)"
    )
    report.add_argument("name", nargs="?", default=None, help="sweep name (default: the latest)")
    report.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from fer_tune.names import check_sweep_name
    from fer_tune.search.results import load_sweep

    if args.name is not None:
        check_sweep_name(args.name, "report NAME")
    sweep = load_sweep(args.name)  # one-line errors for an unknown or unfinished sweep
    print(build(sweep.name))
    return 0


def build(name: str) -> str:
    """Write the report of sweep `name`; the line saying where, how long it took and its answer."""
    import time

    from fer_tune.constants import RESULTS_DIR
    from fer_tune.search.report.build import REPORT_HTML, write_report

    started = time.perf_counter()
    report = write_report(RESULTS_DIR / name)
    seconds = time.perf_counter() - started
    return f"report: {RESULTS_DIR / name / REPORT_HTML} (and report.json) in {seconds:.1f} s; {headline(report)}"


def headline(report: dict) -> str:
    """The report's answer in one line."""
    answer = report["answer"]
    line = f"deploy trial {answer['trial_id']}"
    if "rule_unmet" in answer:  # not a champion: the best by the metric, for reference
        line = f"{answer['rule_unmet']}, trial {answer['trial_id']} (not deployed)"
    test = answer.get("test") or answer.get("validation")
    if test:
        low, high = test["accuracy_interval"]
        line += f": {answer['eval_split']} accuracy {100 * test['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
    chosen = next((c for c in (report.get("reruns") or {}).get("configurations", []) if c["champion"]), None)
    if chosen:
        from fer_tune.search.reruns import mean_sd

        line += f"; best mean {report['metric']} over {chosen['n']} fresh seeds {mean_sd(chosen['mean'], chosen['sd'])}"
    rival = report["how_sure"].get("runner_up")
    if rival:
        line += f"; {rival['verdict']}"
    for note in report.get("left_out", []):  # a damaged predictions or reruns file: its sections, and why
        line += f"; left out {note['section']}: {note['reason']}"
    return line
