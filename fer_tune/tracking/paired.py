"""The new model against the registry's champion on the same test images: `paired_review`.

Called by fer_tune.tracking.champion when a champion exists. The current champion predicts the
images the new model was scored on; McNemar's exact test and a paired bootstrap of the accuracy
difference (fer_tune.search.report.stats) are recorded on the new model version (tag
`paired_test`), the previous champion's predictions join results/<sweep>/predictions.csv, and the
sweep's report is rebuilt with its "against the previous champion" line and logged on the parent
run again. With `promote: significant` in the space file, the new model takes @champion only when
that test says better at alpha 0.05; with `promote: better` (the default), a strictly higher
accuracy is enough, as before.
"""

from __future__ import annotations

import tempfile

import mlflow
import numpy as np

from fer_tune.data.dataset import Split
from fer_tune.errors import FerTuneError
from fer_tune.search.report.build import REPORT_HTML, REPORT_JSON, write_report
from fer_tune.search.report.predictions import PREDICTIONS_FILE, add_rival
from fer_tune.search.report.stats import ALPHA, mcnemar, paired_bootstrap
from fer_tune.tracking.runs import SweepRuns
from fer_tune.tracking.store import download_model


def paired_review(runs: SweepRuns, sweep, name: str, version: str, ours: np.ndarray, split: Split, tags: dict) -> bool:
    """Whether the new model (class `ours` per image of `split`) is significantly better than `name`/`version`.

    Records the comparison in `tags` (set on the new model version by the caller) and in the report.
    """
    try:
        previous = predict_registered(runs, name, version, sweep.data.classes, split)
    except FerTuneError as err:  # the old version cannot be loaded here: no paired test, so never "significant"
        tags["paired_test"] = f"not computed: {err}"
        return False
    truth = split.labels.numpy()
    test, boot = mcnemar(ours == truth, previous == truth), paired_bootstrap(ours == truth, previous == truth)
    better = test["p_value"] < ALPHA and boot["difference"] > 0
    tags["paired_test"] = (
        f"against version {version} on the same {len(truth)} images: accuracy difference "
        f"{boot['difference']:+.4f} [{boot['low']:+.4f}, {boot['high']:+.4f}] (paired bootstrap, 95%), "
        f"McNemar exact p = {test['p_value']:.4g}: {'significantly better' if better else 'not significantly better'}"
    )
    tags["promote_rule"] = sweep.space.promote
    if (sweep.out_dir / PREDICTIONS_FILE).is_file():
        add_rival(sweep.out_dir, previous, f"{name} version {version}")
        write_report(sweep.out_dir)
        for report in (REPORT_HTML, REPORT_JSON):
            runs.client.log_artifact(runs.parent(), str(sweep.out_dir / report))
    return better


def predict_registered(runs: SweepRuns, name: str, version: str, classes, split: Split) -> np.ndarray:
    """The class index (in `classes`; -1 for a class we lack) a registered model predicts for each image."""
    with tempfile.TemporaryDirectory() as folder:
        model = mlflow.pyfunc.load_model(download_model(f"models:/{name}/{version}", runs.uri, folder))
        theirs = np.array((model.metadata.metadata or {})["classes"])
        images = split.images.unsqueeze(1).float().numpy()  # the registered input: float pixel values 0..255
        predicted = theirs[np.asarray(model.predict(images)).argmax(1)]
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(c, -1) for c in predicted])
