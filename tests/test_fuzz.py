"""Property tests: any input to the space-file parser or the FER2013 CSV reader either loads or
raises the project's one-line error (FerTuneError), never another exception."""

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fer_tune.constants import IMAGE_SIZE
from fer_tune.data.fer2013 import read_fer2013_csv
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import SpaceFile, load_space

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys the parser knows (so examples reach deep into it), mixed with arbitrary ones.
KEYS = ["name", "data", "source", "n", "seed", "trainable", "metric", "mode", "search", "algorithm", "pruner",
        "scheduler", "budget", "num_samples", "max_epochs", "max_concurrent", "max_failures", "resources", "cpu",
        "gpu", "mlflow", "space", "model", "lr", "epochs", "batch_size", "dropout", "T_0", "device", "choice", "grid",
        "uniform", "loguniform", "randint", "q", "when", "default", "augmentation"]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["model3", "vgg", "asha", "grid", "optuna", "cpu", "cuda", "auto", "trans4", "plateau", ""]),
    st.text(max_size=8),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                                                  max_size=5),
    max_leaves=20,
)  # fmt: skip
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def load_text(text: str) -> SpaceFile | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text)
        try:
            return load_space(path)
        except FerTuneError as err:
            assert "\n" not in str(err), str(err)  # one line
            return None


@FUZZ
@given(documents)
def test_any_space_document_loads_or_is_one_clear_line(document):
    space = load_text(yaml.safe_dump(document, allow_unicode=True))
    if space is not None:
        space.default_point()  # what loaded is usable


@FUZZ
@given(st.text(max_size=300))
@example("?")  # found by this test: YAML's `? x` makes a key that is not a name (None)
@example("1: x")
def test_any_text_as_a_space_file_loads_or_is_one_clear_line(text):
    load_text(text)


PIXELS = " ".join(["128"] * (IMAGE_SIZE * IMAGE_SIZE))
headers = st.sampled_from(["emotion,pixels,Usage", "emotion, Usage, pixels", "emotion,pixels", "emotion,Usage",
                           "pixels,emotion,Usage", "", "a,b,c"])  # fmt: skip
fields = st.one_of(
    st.sampled_from(["0", "3", "6", "7", "-1", "x", "", "Training", "PublicTest", "PrivateTest", "Test", PIXELS,
                     PIXELS + " 1", PIXELS.replace("128", "256", 1), PIXELS.replace("128", "-1", 1),
                     '"' + PIXELS + '"']),
    st.text(max_size=12),
)  # fmt: skip
rows = st.lists(st.lists(fields, min_size=0, max_size=4).map(",".join), max_size=6)


@FUZZ
@given(headers, rows)
def test_any_fer2013_csv_loads_or_is_one_clear_line(header, body):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_text("\n".join([header, *body]) + "\n")
        try:
            data = read_fer2013_csv(path)
        except FerTuneError as err:
            assert "\n" not in str(err), str(err)
            return
    assert len(data.train) > 0 and data.train.images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
