"""What fer-tune chooses about itself (issue 26, part 7): the cache folder."""

import pytest

from fer_tune.data.cache import cache_dir
from fer_tune.errors import FerTuneError


@pytest.mark.parametrize("home", ["", "relative/home"])
def test_an_empty_or_relative_home_is_one_line_not_a_cache_at_the_root(monkeypatch, home):
    monkeypatch.delenv("FER_TUNE_CACHE", raising=False)
    monkeypatch.setenv("HOME", home)
    with pytest.raises(FerTuneError, match=r"^HOME '.*': not an absolute path.*set HOME, or FER_TUNE_CACHE"):
        cache_dir()


def test_the_cache_is_under_home_or_where_fer_tune_cache_says(monkeypatch, tmp_path):
    monkeypatch.delenv("FER_TUNE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "fer-tune"
    monkeypatch.setenv("FER_TUNE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


SPACE = "name: own\ntrainable: curve\nspace:\n  model: basic\n  lr: 0.001\n"


@pytest.fixture
def refused_before_ray(workdir, no_ray):
    """A space file in the working directory; the test fails if a sweep gets as far as Ray."""
    (workdir / "own.yaml").write_text(SPACE)
    return workdir


def test_a_sweep_with_an_empty_home_is_refused_before_ray(refused_before_ray, monkeypatch, capsys):
    from fer_tune.cli.main import main

    monkeypatch.delenv("FER_TUNE_CACHE", raising=False)
    monkeypatch.setenv("HOME", "")
    assert main(["run", "own.yaml", "--no-track"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: HOME '': not an absolute path") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["ray", "mlflow.db", "mlartifacts"])
def test_a_sweep_may_not_take_the_name_of_fer_tunes_own_folders(refused_before_ray, capsys, name):
    """results/ray is Ray's storage, results/mlflow.db and mlartifacts the default store: a sweep of that name
    would write its tables among them."""
    from fer_tune.cli.main import main

    assert main(["run", "own.yaml", "--no-track", "--name", name]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: --name {name}: results/{name} is fer-tune's own (") and "another" in err
    assert not (refused_before_ray / "results" / name).exists()
    assert not list((refused_before_ray / "results").glob("**/*.csv"))
