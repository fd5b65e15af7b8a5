"""A sweep's name is a safe, bounded slug wherever it comes from: the file's `name:`, --name,
`results NAME`, `results sync NAME`, MLflow's experiment and registered-model names."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_tune.cli.main import main
from fer_tune.errors import FerTuneError
from fer_tune.names import NAME_MAX, check_name
from fer_tune.search.sweep_file import load_space

BAD = ["../escaped", "..", ".", "a/b", "a\\b", "x\ny", "", " lead", "-flag", "a b", "é", "n" * (NAME_MAX + 1), "/abs"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fer-tune: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["quick", "quick-20261205-101500", "a.b_c-1", "n" * NAME_MAX])
def test_a_slug_is_a_name(name):
    assert check_name(name, "--name") == name


@pytest.mark.parametrize("name", BAD)
def test_anything_else_is_refused_in_one_line_saying_what_is_allowed(name):
    with pytest.raises(FerTuneError, match=r"^--name: .*letters, digits, '\.', '_' and '-'") as err:
        check_name(name, "--name")
    assert "\n" not in str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_accepted_name_is_one_plain_folder(text):
    try:
        name = check_name(text, "--name")
    except FerTuneError as err:
        assert "\n" not in str(err) and str(err).startswith("--name: ")
        return
    assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= NAME_MAX
    assert name.isascii() and name.strip() == name


@pytest.mark.parametrize("name", ["../escaped", "a/b", '"x\\ny"', "n" * 300])
def test_the_space_files_name_is_checked_at_load(tmp_path, name):
    (tmp_path / "s.yaml").write_text(f"name: {name}\n")
    with pytest.raises(FerTuneError, match=r"s\.yaml: name: .*expected .*letters, digits"):
        load_space(tmp_path / "s.yaml")


def test_a_file_without_name_takes_its_stem_which_must_be_a_name_too(tmp_path):
    (tmp_path / "my space.yaml").write_text("budget: {num_samples: 1}\n")
    with pytest.raises(FerTuneError, match=r"name \(none given, so the file's name\): 'my space'"):
        load_space(tmp_path / "my space.yaml")


@pytest.mark.parametrize("key", ["experiment", "register_as"])
def test_mlflow_names_are_names(tmp_path, key):
    (tmp_path / "s.yaml").write_text(f"name: ok\nmlflow: {{{key}: ../x}}\n")
    from fer_tune.tracking.settings import mlflow_settings  # tracking validates its own section

    with pytest.raises(FerTuneError, match=rf"s\.yaml: mlflow\.{key}: '\.\./x': not a safe name"):
        mlflow_settings(load_space(tmp_path / "s.yaml"))


@pytest.mark.parametrize(
    "argv, where",
    [
        (["run", "s.yaml", "--no-track", "--name", "../escaped"], "--name"),
        (["run", "s.yaml", "--no-track", "--name", "a/b"], "--name"),
        (["run", "s.yaml", "--no-track", "--name", ".."], "--name"),
        (["run", "s.yaml", "--no-track", "--name", "x" * 300], "--name"),
        (["results", "../x"], "results NAME"),
        (["results", "sync", "../../x"], "results sync NAME"),
        (["report", "../x"], "report NAME"),
        (["run", "s.yaml", "--no-track", "--warm-start", "../x"], "--warm-start"),
    ],
)
def test_the_commands_refuse_a_bad_name_before_writing_anything(workdir, capsys, argv, where):
    (workdir / "s.yaml").write_text("name: s\nbudget: {num_samples: 1, max_epochs: 1}\nspace:\n  model: basic\n")
    assert main(argv) == 1
    assert one_line_error(capsys).startswith(f"fer-tune: error: {where}: ")
    assert sorted(p.name for p in workdir.iterdir()) == ["s.yaml"]  # not even results/
