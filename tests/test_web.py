"""`fer-tune serve`: the JSON API on real photographs and bad uploads, and the page in headless Chromium.

One tiny tracked sweep (module fixture: one trial of 2 epochs of `basic` on the blob data)
registers `fer-web` version 1 as champion. The server runs as `fer-tune serve` in a subprocess
on a free loopback port: once on the registry URI (default limits), once on a folder written by
`fer-tune models download` with --max-upload-mb 1. The photographs are scikit-image's:
astronaut (a portrait), coffee and brick (no face).
"""

import io
import re
import shutil
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow_helpers import free_port, serving, subprocess_env
from PIL import Image
from skimage import data as photos
from urllib3 import encode_multipart_formdata

from fer_tune.cli.main import main
from fer_tune.constants import EMOTIONS

pytestmark = pytest.mark.integration

MODEL = "fer-web"
SPACE = f"""name: web
search: {{algorithm: random, seed: 0}}
pruner: {{name: none}}
budget: {{num_samples: 1, max_epochs: 2, max_concurrent: 1}}
mlflow: {{experiment: fer-web, register_as: {MODEL}}}
space: {{model: basic, batch_size: 16, augmentation: none, lr: 3.0e-3}}
"""
ASTRONAUT_FACE = (220, 110)  # a point between the eyes of skimage.data.astronaut() (512x512), in pixels
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")  # Debian's chromium-driver: the one matching its chromium
PAGE_TIMEOUT = 60  # seconds a page may take to show a result (the first prediction warms the model up)


@dataclass
class Registered:
    folder: Path
    store: str
    registration: object  # fer_tune.tracking.champion.Registration
    sweep: str


@pytest.fixture(scope="module")
def registered(tmp_path_factory, blob_csv) -> Registered:
    """A real tracked sweep of one trial, registered as models:/fer-web@champion in a SQLite store."""
    from fer_tune.cli.sweep import run_space
    from fer_tune.search.cluster import connect_ray
    from fer_tune.search.sweep_file import load_space

    folder = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("FER_TUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        connect_ray("local")  # as the CLI starts it: on loopback only; joins a running one
        (folder / "web.yaml").write_text(SPACE)
        space = load_space("web.yaml")  # named: the page shows the sweep, and the README's screenshot stays put
        sweep, tracking = run_space(space, data_source=str(blob_csv), name="web", storage="ray", verbose=0)
    registration = tracking.registration
    assert registration.alias == "champion", tracking.message
    return Registered(folder, f"sqlite:///{folder / 'results' / 'mlflow.db'}", registration, sweep.name)


def serve_command(model: str, port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "fer_tune.cli", "serve", "--model", model, "--port", str(port), *options]


@pytest.fixture(scope="module")
def server(registered):
    """`fer-tune serve` on the registry's champion, default limits; yields its base URL."""
    port = free_port()
    command = serve_command(f"models:/{MODEL}@champion", port, "--tracking-uri", registered.store)
    with serving(command, "/api/model", port, cwd=registered.folder) as base:
        yield base


@pytest.fixture(scope="module")
def folder_server(registered):
    """`fer-tune serve` on a `fer-tune models download` folder, with a 1 MB upload limit."""
    deploy = registered.folder / "deploy"
    uri = f"models:/{MODEL}@champion"
    assert main(["models", "download", uri, "--to", str(deploy), "--tracking-uri", registered.store]) == 0
    elsewhere = registered.folder / "elsewhere"  # no store here, nor in the environment: the folder is all it has
    elsewhere.mkdir()
    env = {key: value for key, value in subprocess_env().items() if key != "MLFLOW_TRACKING_URI"}
    port = free_port()
    command = serve_command(str(deploy), port, "--max-upload-mb", "1")
    with serving(command, "/api/model", port, cwd=elsewhere, env=env) as base:
        yield base


def encoded(pixels: np.ndarray, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    return buffer.getvalue()


def post(
    base: str, content: bytes, filename: str = "photo.jpg", kind: str = "image/jpeg", track: str | None = None
) -> requests.Response:
    form = None if track is None else {"track": track}
    return requests.post(f"{base}/api/predict", files={"file": (filename, content, kind)}, data=form, timeout=60)


def check_prediction(answer: dict) -> None:
    """Probabilities by emotion name summing to 1, the top one named, boxes inside the picture."""
    for face in answer["faces"]:
        probabilities = face["probabilities"]
        assert list(probabilities) == list(EMOTIONS)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
        assert face["emotion"] == max(probabilities, key=probabilities.get)
        assert face["confidence"] == probabilities[face["emotion"]]
        box = face["box"]
        assert 0 <= box["x"] < box["x"] + box["width"] <= answer["width"]
        assert 0 <= box["y"] < box["y"] + box["height"] <= answer["height"]


# ---- The API


@pytest.mark.slow(seconds=80)
def test_portrait_yields_a_face_box_and_seven_probabilities(server):
    response = post(server, encoded(photos.astronaut()))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["face_detected"] and answer["note"] is None
    assert (answer["width"], answer["height"]) == (512, 512)
    check_prediction(answer)
    x, y = ASTRONAUT_FACE
    box = answer["faces"][0]["box"]  # the largest face: hers
    assert box["x"] < x < box["x"] + box["width"] and box["y"] < y < box["y"] + box["height"], box


@pytest.mark.parametrize("name", ["coffee", "brick"])
def test_a_picture_without_a_face_is_classified_whole(server, name):
    pixels = getattr(photos, name)()
    response = post(server, encoded(pixels, "PNG"), f"{name}.png", "image/png")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer["face_detected"] and "no face" in answer["note"]
    height, width = pixels.shape[:2]
    side = min(height, width)
    [face] = answer["faces"]
    assert face["box"] == {"x": (width - side) // 2, "y": (height - side) // 2, "width": side, "height": side}
    check_prediction(answer)


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit black PNG of width x height: a few hundred KB that decode to width*height bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # a filter byte, then 8 pixels a byte
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def bad_request(base: str, case: str) -> requests.Response:
    """Each bad input a client can send to POST /api/predict."""
    url = f"{base}/api/predict"
    jpeg = encoded(photos.astronaut())
    if case == "json body":
        return requests.post(url, json={"file": "astronaut.jpg"}, timeout=30)
    if case == "no file field":
        return requests.post(url, files={"image": ("a.jpg", jpeg, "image/jpeg")}, timeout=30)
    cases = {  # built when asked for: the bombs take a moment to compress
        "not an image": lambda: ("notes.jpg", b"these are notes, not pixels\n" * 40, "image/jpeg"),
        "truncated image": lambda: ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        "empty file": lambda: ("empty.jpg", b"", "image/jpeg"),
        "text part": lambda: ("notes.txt", b"hello", "text/plain"),
        "over the size limit": lambda: ("huge.jpg", (jpeg + bytes(10 * 2**20))[: 10 * 2**20 + 1], "image/jpeg"),
        "over the pixel limit": lambda: ("48mp.png", png_bomb(8000, 6000), "image/png"),
        "bomb (PIL warns)": lambda: ("100mp.png", png_bomb(10_000, 10_000), "image/png"),
        "bomb (PIL refuses)": lambda: ("900mp.png", png_bomb(30_000, 30_000), "image/png"),
    }
    filename, content, kind = cases[case]()
    return post(base, content, filename, kind)


BAD_INPUTS = {  # case: (status, what the one-line message says)
    "json body": (415, "send the image as multipart/form-data, not application/json"),
    "no file field": (422, "file: field required"),
    "not an image": (400, "not an image: no format Pillow reads"),
    "truncated image": (400, "not a readable image (image file is truncated"),
    "empty file": (400, "the file is empty"),
    "text part": (415, "notes.txt is text/plain, not an image"),
    "over the size limit": (413, "the file is over the upload limit of 10 MB"),
    "over the pixel limit": (413, "image too large: 8000x6000 pixels is over the limit of 40,000,000"),
    "bomb (PIL warns)": (413, "image too large: a decompression bomb"),
    "bomb (PIL refuses)": (413, "image too large: a decompression bomb"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gets_a_one_line_json_error_and_the_server_keeps_answering(server, case):
    status, message = BAD_INPUTS[case]
    response = bad_request(server, case)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and message in body["error"] and "\n" not in body["error"]
    assert post(server, encoded(photos.astronaut())).status_code == 200  # still up, still reading faces


def box_text(box: dict) -> str:
    """A face's box as the `track` field gives it (the page's trackOf)."""
    return ",".join(str(box[key]) for key in ("x", "y", "width", "height"))


@pytest.mark.parametrize(
    "hint",
    ["the face's own box", "", "400,400,60,60", "600,700,50,50", "the face's own box;1,1,60,60"],
    ids=["own box", "blank", "elsewhere", "off the picture", "one of two lost"],
)
def test_a_track_hint_finds_the_face_around_it_and_a_wrong_one_falls_back_to_the_whole_picture(server, hint):
    portrait = encoded(photos.astronaut())
    [whole] = post(server, portrait).json()["faces"]  # no hint: the whole picture searched
    response = post(server, portrait, track=hint.replace("the face's own box", box_text(whole["box"])))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["face_detected"] and len(answer["faces"]) == 1
    box, reference = answer["faces"][0]["box"], whole["box"]
    centre = lambda b: (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    assert np.allclose(centre(box), centre(reference), atol=6), (box, reference)
    check_prediction(answer)


BAD_TRACKS = {  # a `track` value: what the one-line 422 says
    "abc": "track: expected up to 20 boxes 'x,y,width,height' (whole pixels) separated by ';', not 'abc'",
    "1,2,3": "not '1,2,3'",
    "-1,2,30,30": "not '-1,2,30,30'",
    "1.5,2,30,30": "not '1.5,2,30,30'",
    "1,2,30,30;": "not '1,2,30,30;'",
    "12345678901,2,30,30": "not '12345678901,2,30,30'",
    ";".join(["1,2,30,30"] * 21): "expected up to 20 boxes",
    "1,2,0,30": "track: a box's width and height are at least 1 pixel",
}


@pytest.mark.parametrize("track", BAD_TRACKS, ids=lambda track: track[:20])
def test_a_bad_track_hint_is_a_one_line_422(server, track):
    response = post(server, encoded(photos.astronaut()), track=track)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and BAD_TRACKS[track] in body["error"] and "\n" not in body["error"], body


@pytest.mark.slow(seconds=20)
def test_the_upload_limit_is_configurable_and_holds_without_a_content_length(folder_server):
    """1 MB here: refused from its Content-Length, and counted as it streams when it has none (chunked)."""
    content = encoded(photos.astronaut()) + bytes(3 * 2**19)  # 1.5 MB
    response = post(folder_server, content)
    assert response.status_code == 413 and response.json() == {"error": "the file is over the upload limit of 1 MB"}
    body, kind = encode_multipart_formdata({"file": ("big.jpg", content, "image/jpeg")})
    pieces = (body[i : i + 2**16] for i in range(0, len(body), 2**16))  # a generator: requests sends it chunked
    response = requests.post(f"{folder_server}/api/predict", data=pieces, headers={"Content-Type": kind}, timeout=30)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413 and response.json() == {"error": "the file is over the upload limit of 1 MB"}
    assert post(folder_server, encoded(photos.astronaut())).status_code == 200


def test_model_metadata_names_the_registered_version(server, registered):
    info = requests.get(f"{server}/api/model", timeout=30).json()
    assert (info["name"], info["version"], info["aliases"]) == (MODEL, "1", ["champion"])
    assert info["test_accuracy"] == pytest.approx(registered.registration.accuracy, abs=1e-6)
    assert info["classes"] == list(EMOTIONS) and info["eval_split"] == "test"
    assert (info["sweep"], info["architecture"]) == (registered.sweep, "basic")
    assert info["trained_on"] == "trained on blobs.csv"


def test_a_downloaded_folder_serves_the_same_model(server, folder_server, registered):
    info = requests.get(f"{folder_server}/api/model", timeout=30).json()
    assert (info["name"], info["version"], info["aliases"]) == (MODEL, "1", ["champion"])  # from its model card
    assert not (registered.folder / "elsewhere" / "results").exists()  # no default store was opened (or created)
    assert info["test_accuracy"] == requests.get(f"{server}/api/model", timeout=30).json()["test_accuracy"]
    portrait = encoded(photos.astronaut())
    here, there = post(folder_server, portrait).json(), post(server, portrait).json()
    assert here["faces"][0]["box"] == there["faces"][0]["box"]
    assert here["faces"][0]["probabilities"] == pytest.approx(there["faces"][0]["probabilities"], abs=1e-6)


def test_every_link_the_banner_prints_answers(server, registered):
    """`fer-tune serve`'s first line names the page and the API schema: each link it prints opens (the banner
    once linked /docs, removed since, and answered 404)."""
    port = server.rsplit(":", 1)[1]
    banner = (registered.folder / f"server-{port}.log").read_text().splitlines()[0]
    links = re.findall(r"http://[^\s;()]+", banner)
    assert banner.startswith("fer-tune: serving ") and f"{server}/openapi.json" in links, banner
    for link in links:
        assert requests.get(link, timeout=30).status_code == 200, (link, banner)


def test_openapi_schema_describes_both_routes(server):
    # No /docs nor /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, blank offline.
    for page in ("/docs", "/redoc"):
        assert requests.get(f"{server}{page}", timeout=30).status_code == 404
    schema = requests.get(f"{server}/openapi.json", timeout=30).json()
    assert {"/api/predict", "/api/model"} <= set(schema["paths"])
    assert "413" in schema["paths"]["/api/predict"]["post"]["responses"]
    missing = requests.get(f"{server}/no/such/page", timeout=30)
    assert missing.status_code == 404 and list(missing.json()) == ["error"]


@pytest.mark.parametrize(
    "model, message",
    [
        (f"models:/{MODEL}@no-such-alias", f"models:/{MODEL}: cannot read it from the registry"),
        ("models:/no-such-model/1", "models:/no-such-model: cannot read it from the registry"),
        ("no/such/folder", "no/such/folder: no such folder, and not a model URI"),
    ],
)
def test_a_bad_model_fails_in_one_line_before_serving(registered, capsys, model, message):
    port = free_port()
    assert main(["serve", "--model", model, "--tracking-uri", registered.store, "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: {message}") and err.count("\n") == 1, err


def test_a_missing_store_fails_in_one_line_and_is_not_created(tmp_path, capsys):
    absent = tmp_path / "absent.db"
    command = ["serve", "--model", f"models:/{MODEL}@champion", "--tracking-uri", f"sqlite:///{absent}"]
    assert main([*command, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: MLflow store sqlite:///{absent}: no such database"), err
    assert err.count("\n") == 1 and not absent.exists()


def test_a_busy_port_fails_in_one_line(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "anything", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fer-tune: error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1, err


# ---- The page, in headless Chromium driven by Selenium


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fake webcam (a moving test pattern) that it may use without asking."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1560",
        "--force-device-scale-factor=1", "--hide-scrollbars", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        # offline: no name resolves but loopback, and Chromium's own background fetches are off
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-background-networking",
        "--disable-component-update", "--no-first-run",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))  # never downloads a driver
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, timeout: float = PAGE_TIMEOUT):
    """Poll the page until `condition(driver)` is truthy; fail with what was awaited and the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        pytest.fail(f"the page never showed {what}:\n{driver.find_element('tag name', 'body').text[:2000]}")


def requested_urls(driver) -> list[str]:
    """The URLs the page requested since the last call (Chrome's performance log)."""
    import json

    messages = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    return [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]


def test_page_renders_offline_from_its_own_server_only(server, browser):
    """Every request of the page goes to its own server (or a blob:/data: URL); it renders with the
    network cut off, and says what the model was trained on."""
    from selenium.webdriver.common.by import By

    requested_urls(browser)  # drop what earlier tests requested
    browser.get(server)
    wait_for(browser, lambda d: "fer-web v1" in d.find_element(By.ID, "model").text, "the model's name")
    assert "trained on blobs.csv" in browser.find_element(By.ID, "model").text
    assert browser.execute_script("return getComputedStyle(document.body).display") != "none"
    assert browser.execute_script("return document.styleSheets.length") >= 1  # style.css loaded
    urls = requested_urls(browser)
    assert f"{server}/static/app.js" in urls and f"{server}/api/model" in urls, urls
    # the browser's own chrome:// pages (its new-tab page) are not the page's requests: count the network ones
    elsewhere = [url for url in urls if url.startswith(("http", "ws", "ftp")) and not url.startswith(server)]
    assert elsewhere == [], elsewhere
    footer = browser.find_element(By.TAG_NAME, "footer")
    assert [a.get_attribute("href") for a in footer.find_elements(By.TAG_NAME, "a")] == [f"{server}/openapi.json"]


def test_page_boxes_the_face_of_an_uploaded_portrait(server, browser, tmp_path, request):
    from selenium.webdriver.common.by import By

    portrait, coffee = tmp_path / "astronaut.jpg", tmp_path / "coffee.jpg"
    portrait.write_bytes(encoded(photos.astronaut()))
    coffee.write_bytes(encoded(photos.coffee()))
    browser.get(server)
    wait_for(browser, lambda d: "fer-web v1" in d.find_element(By.ID, "model").text, "the model's name")
    assert "champion" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "files").send_keys(f"{portrait}\n{coffee}")
    done = lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, ".result") if c.get_attribute("data-state") == "done"]
    cards = wait_for(browser, lambda d: len(done(d)) == 2 and done(d), "two read pictures")
    by_name = {card.find_element(By.TAG_NAME, "h2").text: card for card in cards}
    face = by_name["astronaut.jpg"]
    boxes = face.find_elements(By.CSS_SELECTOR, ".face-box")
    assert len(boxes) >= 1 and boxes[0].is_displayed() and boxes[0].size["width"] > 20
    assert len(face.find_elements(By.CSS_SELECTOR, ".face .bar")) == 7 * len(boxes)
    assert boxes[0].text.split()[0] in EMOTIONS  # the box's tag: its top emotion
    assert "Model trained on blobs.csv." in face.find_element(By.CSS_SELECTOR, ".trained-on").text  # beside it
    whole = by_name["coffee.jpg"]
    assert "No face found" in whole.find_element(By.CSS_SELECTOR, ".note").text
    assert len(whole.find_elements(By.CSS_SELECTOR, ".bar")) == 7
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size == (1280, browser.execute_script("return window.innerHeight"))
    if request.config.getoption("--screenshot"):  # `make screenshot`: the README's picture, docs/serve.png
        shutil.copy(shot, request.config.getoption("--screenshot"))


def test_webcam_frames_go_to_the_api_and_the_page_shows_the_result(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    browser.find_element(By.ID, "webcam").click()
    live = browser.find_element(By.ID, "live")
    wait_for(browser, lambda d: int(live.get_attribute("data-frames") or 0) >= 3, "three answered webcam frames")
    assert len(live.find_elements(By.CSS_SELECTOR, ".bar")) == 7  # Chromium's fake camera shows no face
    assert "No face found" in live.text and live.find_element(By.ID, "live-status").text == "live"
    rate = live.find_element(By.ID, "live-rate")  # the frame rate over the recent frames, and ms a frame
    assert re.fullmatch(r"\d+\.\d frames/s · \d+ ms a frame", rate.text), rate.text
    assert float(rate.get_attribute("data-fps")) > 0 and int(rate.get_attribute("data-ms")) > 0
    assert live.find_elements(By.CSS_SELECTOR, ".face-box.whole")
    browser.find_element(By.ID, "webcam").click()
    assert live.get_attribute("hidden") is not None
    assert browser.execute_script("return webcam.stream === null")  # the camera is released


def test_the_listening_socket_is_tcp_so_answers_are_not_held_back():
    """asyncio sets TCP_NODELAY only where the listening socket says IPPROTO_TCP; without it, each
    answer waited 40 ms for the client's delayed ACK (Nagle's algorithm)."""
    import socket

    from fer_tune.cli.serve import listening_socket

    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_models_list_says_what_each_version_was_trained_on(registered, capsys):
    assert main(["models", "list", MODEL, "--tracking-uri", registered.store]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split()[-1] == "trained_on" and row.split()[-1] == "blobs.csv"


@pytest.mark.parametrize(
    "source, words",
    [
        ("synthetic(n=4000, seed=0)", "trained on synthetic faces — not for real photographs"),
        ("/data/fer2013.csv", "trained on fer2013.csv"),
        (None, "trained on unrecorded data"),
    ],
)
def test_trained_on_words(source, words):
    from fer_tune.serving.model import trained_on

    assert trained_on(source) == words
