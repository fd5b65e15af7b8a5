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
