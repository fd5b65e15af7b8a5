"""A sweep's report, end to end: a planted sweep, the report it writes, its rebuild, its page.

The planted sweep (module fixture, --no-track): a grid over `lr` (1e-7: nothing is learnt, the trial
stays at chance; 3e-3: it learns) × `weight_decay` (0, 1e-9, 1e-8: no effect at this scale), 6 trials
of up to 2 epochs of `basic` on the blob data, ASHA stopping some after 1. The trials are the `curve`
trainable's (fer_tune.core.curves: the learning curves of those configurations, with real Ray, Optuna,
checkpoints and results; the champion's test scores are those of its untrained `basic`). Importance
must rank `lr` first; the report must be rebuilt byte-identically from results/<sweep>/ alone; the page
must load nothing from anywhere.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from fer_tune.cli.main import main

pytestmark = pytest.mark.integration

PLANTED = """name: planted
trainable: curve
curve: {sleep_s: 0.05}   # each epoch takes a measurable time: the report's trainer-seconds are > 0
search: {algorithm: grid}
pruner: {name: asha, grace_period: 1, reduction_factor: 2}
budget: {num_samples: 1, max_epochs: 2, max_concurrent: 2}
space:
  model: basic
  batch_size: 16
  augmentation: none
  lr: {grid: [1.0e-7, 3.0e-3]}
  weight_decay: {grid: [0.0, 1.0e-9, 1.0e-8]}
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, blob_csv):
    """The planted sweep, run untracked in a fresh folder: (folder, Sweep)."""
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.cluster import connect_ray
    from fer_tune.search.sweep_file import load_space

    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        connect_ray("local")  # as the CLI starts it: on loopback only; joins a running one
        (folder / "planted.yaml").write_text(PLANTED)
        sweep, tracking = run_space(load_space("planted.yaml"), data_source=str(blob_csv), name="planted", track=False)
    assert tracking.lines() == [] and not (folder / "results" / "mlflow.db").exists()  # the do-nothing tracker
    return folder, sweep


def report_of(folder: Path) -> dict:
    return json.loads((folder / "results" / "planted" / "report.json").read_text())


@pytest.mark.slow(seconds=30)
def test_importance_ranks_the_planted_parameter_first(planted):
    mattered = report_of(planted[0])["what_mattered"]
    ranked = list(mattered["importance"])
    assert ranked[0] == "lr" and mattered["importance"]["lr"] > 0.5, mattered["importance"]
    assert mattered["rung"] >= 1 and mattered["trials_scored"] == 6
    by_lr = {row["value"]: row for row in mattered["marginals"]["lr"]}
    assert by_lr["0.003"]["mean"] > by_lr["1e-07"]["mean"] + 0.1  # the marginal table shows the same effect
    assert mattered["interaction"]["params"] == ["lr", "weight_decay"]


def test_untracked_sweep_writes_its_report(planted):
    folder, sweep = planted
    report = report_of(folder)
    answer = report["answer"]
    assert answer["trial_id"] == sweep.best.trial_id and answer["eval_split"] == "test"
    test = answer["test"]
    low, high = test["accuracy_interval"]
    assert test["n"] == 70 and low < test["accuracy"] < high
    assert sum(map(sum, test["confusion"])) == 70 and len(test["recall"]) == 7
    rival = report["how_sure"]["runner_up"]
    assert rival["id"] != answer["trial_id"] and 0 <= rival["p_value"] <= 1
    assert ("not distinguishable" in rival["verdict"]) == (rival["p_value"] >= 0.05)
    cost = report["cost"]
    assert cost["epochs"] == int(sweep.trials["epochs_run"].sum()) and cost["epochs_if_all_ran"] == 12
    assert cost["epochs_saved"] == 12 - cost["epochs"] and cost["trainer_seconds"] > 0
    html = (folder / "results" / "planted" / "report.html").read_text()
    for section in ("The answer", "How sure", "What mattered", "What it cost"):
        assert f"<h2>{section}</h2>" in html


def test_report_page_is_self_contained(planted):
    html = (planted[0] / "results" / "planted" / "report.html").read_text()
    links = re.findall(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.I)
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links), links[:5]
    assert not re.search(r"<script|<link|<iframe|<object|@import|url\(|https?://", html, flags=re.I)


def test_report_is_rebuilt_identically_from_results_alone(planted, tmp_path, monkeypatch, capsys):
    source = planted[0] / "results" / "planted"
    copy = tmp_path / "results" / "planted"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("report.*"))  # no Ray folder, no MLflow store
    monkeypatch.chdir(tmp_path)
    assert main(["report", "planted"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("report: results/planted/report.html") and "deploy trial" in out
    for name in ("report.json", "report.html"):
        assert (copy / name).read_bytes() == (source / name).read_bytes(), name
    assert not (tmp_path / "results" / "ray").exists() and not (tmp_path / "results" / "mlflow.db").exists()


def test_report_of_an_unknown_sweep_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: no sweep named 'nosuch'") and err.count("\n") == 1


def test_report_renders_offline_in_headless_chromium(planted, tmp_path, request):
    """Every image decodes, and Chromium sends no request to any network (the page's images are inline)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        page = planted[0] / "results" / "planted" / "report.html"
        driver.get(page.as_uri())
        images = driver.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert images and all(images)
        assert "What mattered" in driver.find_element("tag name", "body").text
        requested = [
            json.loads(entry["message"])["message"]["params"]["request"]["url"]
            for entry in driver.get_log("performance")
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
        assert page.as_uri() in requested, requested
        # the browser's own chrome:// pages may load; nothing may go to a network
        network = [url for url in requested if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
        assert not network, network
        driver.set_window_size(1100, 1500)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if request.config.getoption("--report-screenshot"):  # `make screenshot`: the README's docs/report.png
            shutil.copy(shot, request.config.getoption("--report-screenshot"))
    finally:
        driver.quit()


@pytest.mark.slow(seconds=20)
def test_tracked_end_logs_the_report_and_tests_against_the_previous_champion(planted, monkeypatch):
    """The tracker's end of a sweep, twice on the planted sweep's results (no more training): first with the
    runner-up as the sweep's best, registered as champion with the report on its parent run; then the real
    best under `promote: significant`, compared with it by McNemar's test on the same test images."""
    import dataclasses

    import mlflow

    from fer_tune.search.report.stats import ALPHA
    from fer_tune.tracking.tracker import Tracker

    folder, sweep = planted
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ranked = sorted((r for r in sweep.records if r.best_metric is not None), key=lambda r: -r.best_metric)
    first = dataclasses.replace(sweep, best=ranked[1])
    outcome = Tracker.for_sweep(first.space, first.name, first.data).finish(first)
    assert outcome.registration.alias == "champion", outcome.message
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'results' / 'mlflow.db'}")
    parent = client.get_run(outcome.registration.run_id).data.tags["mlflow.parentRunId"]
    assert {"report.html", "report.json"} <= {a.path for a in client.list_artifacts(parent)}

    shutil.copytree(folder / "results" / "planted", folder / "results" / "again")
    space = sweep.space.model_copy(update={"promote": "significant"})
    again = dataclasses.replace(sweep, name="again", space=space, out_dir=Path("results") / "again")
    second = Tracker.for_sweep(space, "again", sweep.data).finish(again).registration
    tags = client.get_model_version(second.name, second.version).tags
    assert tags["promote_rule"] == "significant" and "McNemar exact p" in tags["paired_test"], tags
    previous = json.loads((folder / "results" / "again" / "report.json").read_text())["how_sure"]["previous_champion"]
    assert previous["id"] == f"{second.name} version {outcome.registration.version}"
    significant = previous["p_value"] < ALPHA and previous["difference"] > 0
    assert second.alias == ("champion" if significant else "challenger"), (previous, tags)
    parent = client.get_run(second.run_id).data.tags["mlflow.parentRunId"]
    logged = client.download_artifacts(parent, "report.json")
    assert "previous_champion" in json.loads(Path(logged).read_text())["how_sure"]
