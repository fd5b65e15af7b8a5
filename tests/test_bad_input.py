"""Bad input, second round (issue 16): every class is one line naming the flag, file or value, what
was wrong and what is allowed; exit non-zero; no traceback; checked before Ray, the data or the network."""

import gzip
import math
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.numbers import finite_number, whole_number
from fer_tune.search.cluster import _check_listening, check_storage
from fer_tune.search.sweep_file import load_space
from fer_tune.search.yaml_strict import MAX_YAML_BYTES
from fer_tune.tracking.store import check_store

SPACE = "name: bad\npruner: {name: none}\nbudget: {num_samples: 1, max_epochs: 1}\nspace:\n  model: basic\n"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def space_file(workdir):
    (workdir / "bad.yaml").write_text(SPACE)
    return workdir / "bad.yaml"


# --- space files: encodings, size, what the path is -------------------------------------------------


def test_a_utf16_space_file_with_bom_loads(tmp_path):
    (tmp_path / "u16.yaml").write_text(SPACE, encoding="utf-16")
    (tmp_path / "bom8.yaml").write_text(SPACE, encoding="utf-8-sig")
    assert load_space(tmp_path / "u16.yaml").name == load_space(tmp_path / "bom8.yaml").name == "bad"


def test_a_latin1_space_file_is_one_line_naming_the_line_and_byte(tmp_path):
    (tmp_path / "l1.yaml").write_bytes(SPACE.encode() + "# café\n".encode("latin-1"))
    with pytest.raises(FerTuneError, match=r"l1\.yaml: line 6: not UTF-8 text \(byte 0xe9\); expected UTF-8"):
        load_space(tmp_path / "l1.yaml")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["utf-8", "utf-16", "latin-1", "raw"]))
def test_any_bytes_as_a_space_file_load_or_are_one_line(tmp_path_factory, data, encoding):
    path = tmp_path_factory.mktemp("enc") / "f.yaml"
    path.write_bytes(data if encoding == "raw" else data.decode("latin-1").encode(encoding))
    try:
        load_space(path)
    except FerTuneError as err:
        assert "\n" not in str(err)


def test_a_huge_space_file_is_refused_at_once_by_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "#" * 10_000_000)
    started = time.monotonic()
    with pytest.raises(
        FerTuneError, match=rf"big\.yaml: 10000010 bytes; expected .* at most {MAX_YAML_BYTES // 1000} kB"
    ):
        load_space(path)
    assert time.monotonic() - started < 1


def test_a_folder_a_fifo_or_a_device_as_space_file_says_what_it_is(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(FerTuneError, match=r"dir\.yaml: is a folder; expected a search-space file"):
        load_space(tmp_path / "dir.yaml")
    with pytest.raises(FerTuneError, match=r"fifo\.yaml: is a FIFO, not a regular file"):
        load_space(tmp_path / "fifo.yaml")  # opening it would block forever
    with pytest.raises(FerTuneError, match=r"/dev/null: is a device, not a regular file"):
        load_space("/dev/null")


# --- half-written results folders --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sweep_json, trials_csv, expected",
    [
        ('{"space": {"metric": "val_acc', "trial_id,best_val_accuracy\n", r"sweep\.json: not valid JSON"),
        ("", "trial_id,best_val_accuracy\n", r"sweep\.json: not valid JSON"),
        ('{"space": {}}', "trial_id,best_val_accuracy\n", r"sweep\.json: no space with metric, mode and path"),
        ('{"space": {"metric": "val_accuracy", "mode": "max", "path": "x"}}', "", r"trials\.csv: unreadable"),
        ('{"space": {"metric": "val_accuracy", "mode": "max", "path": "x"}}', "a,b\n1,2\n", r"no best_val_accuracy"),
    ],
)
@pytest.mark.parametrize("command", ["results", "warm-start"])
def test_a_half_written_sweep_is_one_line(workdir, capsys, no_ray, sweep_json, trials_csv, expected, command):
    """Read by `results NAME` or as an earlier sweep by --warm-start: the same one line."""
    folder = workdir / "results" / "cut"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(sweep_json)
    (folder / "trials.csv").write_text(trials_csv)
    if command == "results":
        assert main(["results", "cut"]) == 1
    else:
        (workdir / "bad.yaml").write_text(SPACE.replace("basic", "basic\n  lr: {loguniform: [1.0e-4, 1.0e-2]}"))
        assert main(["run", "bad.yaml", "--no-track", "--name", "w", "--warm-start", "cut"]) == 1
    err = one_line_error(capsys)
    assert __import__("re").search(expected, err) and "incomplete" in err


# --- Ray addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["host:notaport", "host:99999", "127.0.0.1", "bogus://h:1", "a b:1", ":6379"])
def test_a_malformed_address_says_what_is_expected(address):
    with pytest.raises(FerTuneError, match=r"^--address .*expected HOST:PORT|unknown scheme; expected HOST:PORT"):
        _check_listening(address)


def test_a_garbage_ray_address_is_named_as_the_environment_variable(space_file, workdir):
    # A process of its own: the suite's process may already hold a Ray session, which connect_ray would reuse.
    env = {**os.environ, "RAY_ADDRESS": "garbage:port"}
    done = subprocess.run([sys.executable, "-m", "fer_tune.cli", "run", "bad.yaml", "--no-track", "--name", "r1"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert done.stderr.startswith("fer-tune: error: RAY_ADDRESS 'garbage:port': expected HOST:PORT"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.fixture
def listener():
    """A TCP server that accepts and answers `reply` (or nothing): not Ray, like a proxy that takes any port."""
    servers = []

    def start(reply: bytes | None) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                if reply is not None:
                    conn.sendall(reply)
                servers.append(conn)

        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[1]

    yield start
    for s in servers:
        s.close()


SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an HTTP/2 server's first frame
STATUS_404 = b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x8d"  # HEADERS on stream 1: :status 404 (what a proxy answered)
STATUS_200 = b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88"  # HEADERS on stream 1: :status 200 (any gRPC server)


@pytest.mark.parametrize(
    "reply", [None, b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 400 Bad Request\r\n\r\n", SETTINGS, SETTINGS + STATUS_404]
)
def test_something_that_is_not_ray_answers_within_five_seconds(listener, reply):
    port = listener(reply)
    started = time.monotonic()
    with pytest.raises(
        FerTuneError,
        match=rf"--address 127\.0\.0\.1:{port}: (something listens there, but not a Ray|no Ray cluster answers)",
    ):
        _check_listening(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5.5


def test_a_grpc_server_passes_the_address_check(listener):
    # What a gRPC server (Ray's GCS) answers to a call: HTTP/2 SETTINGS, then :status 200 headers.
    # Checked by hand against the GCS of a local Ray 2.x session (it passes in 0.05 s).
    port = listener(SETTINGS + STATUS_200)
    _check_listening(f"127.0.0.1:{port}")


# --- storage and tracking URIs -----------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["bogus://bucket/x", "garbage://x?region=eu"])
def test_an_unknown_storage_scheme_is_refused_before_ray(space_file, no_ray, capsys, storage):
    assert main(["run", "bad.yaml", "--no-track", "--name", "s1", "--storage", storage]) == 1
    err = one_line_error(capsys)
    assert "--storage " in err and "unknown scheme" in err and "SECRET" not in err


@pytest.mark.parametrize(
    "storage, says",
    [
        ("s3://bucket/x?secret_key=V4LU3&region=x", "secret_key in the URI would be saved in Ray's experiment files"),
        ("garbage://x?token=V4LU3", "token in the URI would be saved"),
        ("file://{tmp}?sig=V4LU3", "sig in the URI would be saved"),
        ("file://{tmp}?version=2", "a file:// URI takes no query or fragment"),
    ],
)
def test_a_storage_uri_carrying_a_secret_or_a_query_is_refused_before_ray(
    space_file, no_ray, capsys, tmp_path, storage, says
):
    """Ray keeps --storage verbatim in tuner.pkl and every trial's state: a secret there is a secret on disk;
    and a file:// URI with a query once passed this check and then failed inside Ray (IsADirectoryError)."""
    storage = storage.format(tmp=tmp_path)
    assert main(["run", "bad.yaml", "--no-track", "--name", "s1", "--storage", storage]) == 1
    err = one_line_error(capsys)
    assert f"--storage {storage.split('?')[0]}?" in err and says in err and "V4LU3" not in err, err


def test_a_storage_uri_pyarrow_can_open_passes(tmp_path):
    check_storage(f"file://{tmp_path}")  # Ray's own local URI form


@pytest.mark.parametrize("uri", ["garbage://x", "s4://bucket", "ftp://u:SECRET@h/x"])
def test_a_tracking_uri_with_an_unknown_scheme_is_refused(uri):
    with pytest.raises(FerTuneError, match=r"MLflow store .*: unknown scheme .*expected one of sqlite") as err:
        check_store(uri, write=True)
    assert "SECRET" not in str(err.value) or "***" in str(err.value)


@pytest.mark.parametrize("write", [True, False])
def test_a_sqlite_store_that_is_a_text_file_is_refused(tmp_path, write):
    (tmp_path / "notes.db").write_text("these are my notes\n")
    with pytest.raises(FerTuneError, match=r"notes\.db is not an SQLite database"):
        check_store(f"sqlite:///{tmp_path}/notes.db", write=write)
    check_store(f"sqlite:///{tmp_path}/new.db", write=True)  # a new store is fine


# --- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--cpus-per-trial", "nan"], "--cpus-per-trial nan: expected a finite number above 0"),
        (["--cpus-per-trial", "inf"], "--cpus-per-trial inf: expected a finite number above 0"),
        (["--gpus-per-trial", "nan"], "--gpus-per-trial nan: expected a finite number from 0 to 64"),
        (["--gpus-per-trial=-1"], "--gpus-per-trial -1: expected a finite number from 0 to 64"),
        (["--max-epochs", "1e9"], "--max-epochs 1000000000: expected an integer from 1 to 10000"),
        (["--num-samples", "1e30"], "run: argument --num-samples: invalid int value: '1e30'"),
        (["--smoke", "--num-samples", "3"], "--smoke with --num-samples: --smoke runs 2 trials of 1 epoch"),
    ],
)
def test_flags_out_of_range_or_not_finite_are_one_line(space_file, no_ray, capsys, flags, expected):
    code = _exit_code(lambda: main(["run", "bad.yaml", "--no-track", "--name", "n1", *flags]))
    assert code in (1, 2) and expected in one_line_error(capsys)


@pytest.mark.parametrize(
    "section, expected",
    [
        ("budget: {num_samples: 1e30}", "budget.num_samples: 1e+30: too large; expected an integer from 1 to 100000"),
        ("budget: {max_epochs: 1e7}", "budget.max_epochs: 1e+07: too large; expected an integer from 1 to 10000"),
        ("data: {n: 1e15}", "data.n: that many synthetic images need"),
        ("data: {seed: -1}", "data.seed"),
        ("resources: {cpu: .nan}", "resources.cpu: Input should be a finite number"),
        ("resources: {gpu: .inf}", "resources.gpu: Input should be a finite number"),
        ("pruner: {reduction_factor: .inf}", "pruner.reduction_factor"),
    ],
)
def test_file_numbers_out_of_range_are_one_line(tmp_path, section, expected):
    (tmp_path / "s.yaml").write_text(f"name: s\n{section}\n")
    with pytest.raises(FerTuneError, match=__import__("re").escape(expected)):
        load_space(tmp_path / "s.yaml")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(), st.integers(-(10**30), 10**30)))
def test_a_checked_number_is_finite_and_in_range_or_one_line(value):
    try:
        checked = finite_number(value, "--x", low=0, low_open=True, high=1024)
    except FerTuneError as err:
        assert str(err).startswith("--x ") and "\n" not in str(err)
    else:
        assert math.isfinite(checked) and 0 < checked <= 1024
    try:
        whole = whole_number(value, "--n", low=1, high=10_000)
    except FerTuneError as err:
        assert str(err).startswith("--n ") and "expected an integer" in str(err)
    else:
        assert isinstance(whole, int) and 1 <= whole <= 10_000


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "bad.yaml", "--address", ""],
        ["run", "bad.yaml", "--data", " "],
        ["run", "bad.yaml", "--storage", ""],
        ["run", "bad.yaml", "--name", ""],
        ["run", "bad.yaml", "--warm-start", ""],
        ["run", ""],
        ["train", "bad.yaml", "--data", ""],
        ["data", "synth", "--out", ""],
        ["serve", "--host", ""],
        ["predict", "x.png", "--model", ""],
    ],
)
def test_an_empty_flag_value_is_refused_not_taken_for_the_default(space_file, no_ray, capsys, argv):
    """`--address ''` used to run the sweep on local Ray; an empty value is never the default's stand-in."""
    assert _exit_code(lambda: main(argv)) == 2
    err = one_line_error(capsys)
    assert "an empty value; give one or leave the flag out" in err
    assert sorted(p.name for p in space_file.parent.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["serve", "--max-upload-mb", "nan"], "serve: argument --max-upload-mb: 'nan': expected a number of megabytes"),
        (["serve", "--port", "99999"], "serve: argument --port: '99999': expected a port from 1 to 65535"),
        (["ui", "--port", "0"], "ui: argument --port: '0': expected a port from 1 to 65535"),
        (["data", "synth", "--out", "x.csv", "--seed", "-1"], "--seed -1: expected an integer from 0 to 4294967295"),
        (["data", "synth", "--out", "x.csv", "--n", "1e13"], "--n 10000000000000: that many synthetic images need"),
    ],
)
def test_command_numbers_are_one_line_and_nothing_is_written(workdir, capsys, argv, expected):
    assert _exit_code(lambda: main(argv)) in (1, 2)
    assert expected in one_line_error(capsys)
    assert not (workdir / "x.csv").exists()


def test_data_synth_onto_a_full_disk_is_one_line(capsys):
    assert main(["data", "synth", "--out", "/dev/full", "--n", "70"]) == 1
    assert "--out /dev/full: cannot write it (No space left on device)" in one_line_error(capsys)


def _exit_code(call) -> int:
    try:
        return call()
    except SystemExit as exit:  # argparse's usage errors
        return exit.code


# --- data files that are not what they are named -----------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        # mtime=0: gzip stamps the time into its header, and a parameter that differs between
        # two collections makes pytest-xdist's workers refuse the run
        (gzip.compress(b"emotion,pixels,Usage\n", mtime=0), "is a gzip file (gunzip it first)"),
        (b"PK\x03\x04rest", "is a zip archive (unzip it first)"),
        (b"\x00\x01\x02\x03binary", "is binary data, not text"),
        (bytes(range(128, 256)) * 4, "is binary data, not text"),
    ],
    ids=["gzip", "zip", "control-bytes", "high-bytes"],
)
def test_a_binary_csv_says_what_it_is_before_ray(space_file, no_ray, capsys, content, expected):
    (space_file.parent / "faces.csv").write_bytes(content)
    assert main(["run", "bad.yaml", "--no-track", "--name", "d1", "--data", "faces.csv"]) == 1
    err = one_line_error(capsys)
    assert f"faces.csv: {expected}; expected a FER2013 CSV" in err and "\\x" not in err


def test_a_malformed_csv_and_a_grid_over_a_range_fail_before_ray(space_file, no_ray, capsys):
    (space_file.parent / "faces.csv").write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    assert main(["run", "bad.yaml", "--no-track", "--name", "d2", "--data", "faces.csv"]) == 1
    assert "faces.csv line 2: column 'emotion' value '9' is not a label" in one_line_error(capsys)
    grid = SPACE.replace("name: bad", "name: grid") + "  lr: {uniform: [0.001, 0.1]}\nsearch: {algorithm: grid}\n"
    (space_file.parent / "grid.yaml").write_text(grid)
    assert main(["run", "grid.yaml", "--no-track", "--name", "d3"]) == 1
    assert "space.lr: a uniform range cannot be enumerated" in one_line_error(capsys)


def test_a_warm_start_from_a_sweep_that_does_not_exist_fails_before_ray(space_file, no_ray, capsys):
    assert main(["run", "bad.yaml", "--no-track", "--name", "w", "--warm-start", "nosuch"]) == 1
    assert "--warm-start nosuch: no finished sweep of that name" in one_line_error(capsys)


# --- predict -----------------------------------------------------------------------------------------


def test_predict_on_a_folder_or_a_decompression_bomb_is_one_line(workdir, capsys):
    from PIL import Image

    (workdir / "photos").mkdir()
    assert main(["predict", "photos", "--model", "unused"]) == 1
    assert "photos: is a folder; expected an image file" in one_line_error(capsys)
    Image.new("1", (9000, 9000)).save(workdir / "bomb.png")  # 81 MP of one colour: a few kB on disk
    assert (workdir / "bomb.png").stat().st_size < 100_000
    assert main(["predict", "bomb.png", "--model", "unused"]) == 1
    assert "bomb.png: 9000x9000 pixels is over the limit of 40,000,000" in one_line_error(capsys)
