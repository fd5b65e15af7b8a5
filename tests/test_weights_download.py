"""The driver's download of ImageNet weights: torch.hub's download and checksum, against a file served on loopback."""

import functools
import hashlib
import http.server
import io
import threading

import pytest
import torch

from fer_tune.core.models import imagenet
from fer_tune.core.models.imagenet import download_weights, fetch_pretrained, weights_path
from fer_tune.errors import FerTuneError


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a free port); yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on the test's stderr
        pass


def weights_file(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv.weight": torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(seed))}, buffer)
    return buffer.getvalue()


def test_a_file_whose_checksum_matches_its_name_is_downloaded(served, tmp_path):
    folder, base = served
    content = weights_file()
    name = f"tiny-{hashlib.sha256(content).hexdigest()[:8]}.pth"  # torchvision's naming: hash prefix in the name
    (folder / name).write_bytes(content)
    target = tmp_path / "hub" / "checkpoints" / name
    download_weights(f"{base}/{name}", target)
    assert target.read_bytes() == content
    assert torch.load(target, weights_only=True)["conv.weight"].shape == (4, 1, 3, 3)


def test_a_corrupt_download_leaves_no_file(served, tmp_path):
    folder, base = served
    name = f"tiny-{hashlib.sha256(weights_file(0)).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(weights_file(1))  # other bytes under the same name
    target = tmp_path / "checkpoints" / name
    with pytest.raises(FerTuneError, match=rf"^{base}/{name}: invalid hash value"):
        download_weights(f"{base}/{name}", target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no partial file either


def test_offline_the_driver_says_in_one_line_where_the_file_goes(served, tmp_path, monkeypatch):
    """The download fails (a 404 from loopback here; offline, a name that does not resolve): the
    missing-weights line of an offline machine, with the reason."""
    _, base = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(imagenet, "weights_url", lambda name: f"{base}/missing/resnet18-f37072fd.pth")
    with pytest.raises(FerTuneError) as err:
        fetch_pretrained("resnet18")
    message = str(err.value)
    assert "\n" not in message and message.startswith("ImageNet weights for resnet18 not found: expected")
    assert message.endswith(f"[download failed: {base}/missing/resnet18-f37072fd.pth: HTTP 404 File not found]")
    assert not weights_path("resnet18").exists()


def test_torch_home_a_file_is_one_line_naming_it(served, tmp_path, monkeypatch):
    """TORCH_HOME pointing at a file once raised NotADirectoryError from the driver's mkdir."""
    _, base = served
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "afile"))
    monkeypatch.setattr(imagenet, "weights_url", lambda name: f"{base}/resnet18-f37072fd.pth")
    with pytest.raises(FerTuneError) as err:
        fetch_pretrained("resnet18")
    assert "\n" not in str(err.value) and str(err.value).endswith(
        f"[download failed: cannot make {tmp_path / 'afile' / 'hub' / 'checkpoints'} (Not a directory); "
        "set TORCH_HOME to a folder this user can write]"
    )


def test_weights_in_the_cache_are_not_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    monkeypatch.setattr(imagenet, "download_weights", lambda url, path: pytest.fail("downloaded a cached file"))
    fetch_pretrained("resnet18")
    assert path.read_bytes() == b"cached"
