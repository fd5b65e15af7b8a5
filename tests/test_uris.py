"""Credentials in a tracking or storage URI are never shown or stored: userinfo and query secrets."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_tune.cli.main import main
from fer_tune.uris import redact

CASES = [
    ("http://user:secret@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
    ("http://user:p@ss@h:1/x", "http://user:***@h:1/x"),
    ("https://ghp_SECRET@host/x", "https://***@host/x"),
    ("https://h/x?token=SECRET&x=1", "https://h/x?token=***&x=1"),
    ("https://h/x?x=1&access_token=SECRET", "https://h/x?x=1&access_token=***"),
    ("postgresql://fer:SECRET@db/x?sslpassword=SECRET", "postgresql://fer:***@db/x?sslpassword=***"),
    (
        "s3://b/p?X-Amz-Signature=SECRET&X-Amz-Credential=SECRET&X-Amz-Security-Token=SECRET&region=us",
        "s3://b/p?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Security-Token=***&region=us",
    ),
    ("s3://b/p?access_key=SECRET&secret_key=SECRET", "s3://b/p?access_key=***&secret_key=***"),
    ("https://acct.blob.core.windows.net/c?sv=2020&sig=SECRET", "https://acct.blob.core.windows.net/c?sv=2020&sig=***"),
    ("mysql://u:SECRET@h/db;apikey=SECRET", "mysql://u:***@h/db;apikey=***"),
    ("error talking to 'https://h?key=SECRET' (401)", "error talking to 'https://h?key=***' (401)"),
    ("MLflow store http://h/?token=SECRET: no answer", "MLflow store http://h/?token=***: no answer"),
]
PLAIN = ["sqlite:////tmp/a.db", "file:///a/b@c", "results/ray", "mail x@y.com", "http://h:5000/x?page=2"]


@pytest.mark.parametrize("uri, shown", CASES)
def test_every_credential_form_is_masked(uri, shown):
    assert redact(uri) == shown and "SECRET" not in redact(uri)


@pytest.mark.parametrize("text", PLAIN)
def test_text_without_credentials_is_unchanged(text):
    assert redact(text) == text


secrets = st.text(st.characters(min_codepoint=48, max_codepoint=122, categories=["Lu", "Ll", "Nd"]), min_size=4)
keys = st.sampled_from(["token", "access_token", "key", "api_key", "secret", "password", "sig", "Signature", "auth"])


@settings(max_examples=200, deadline=None)
@given(secret=secrets, key=keys, scheme=st.sampled_from(["http", "https", "s3", "gs", "postgresql", "mysql+pymysql"]))
def test_no_secret_survives_in_any_position(secret, key, scheme):
    # The secret fills one slot of a message; the message's own words may contain it too (secret `fail` in
    # `failed:`), so the check is that exactly the slot is masked and every other character kept.
    for template in (
        "{scheme}://user:{secret}@host:1/p",
        "{scheme}://{secret}@host/p",
        "{scheme}://host/p?{key}={secret}",
        "{scheme}://host/p?a=1&{key}={secret}#frag",
    ):
        message = "failed: " + template + " (reason)"
        for name in (key, key.upper()):
            shown = redact(message.format(scheme=scheme, key=name, secret=secret))
            assert shown == message.format(scheme=scheme, key=name, secret="***"), template


passwords = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1)  # printable, no space


@settings(max_examples=300, deadline=None)
@given(password=passwords, scheme=st.sampled_from(["http", "https", "postgresql", "postgresql+psycopg", "mysql"]))
def test_a_password_of_any_printable_characters_is_masked_whole(password, scheme):
    # / # ? @ and quotes in a password end a parsed userinfo early; the mask runs to the URI's last @.
    for template in ("{scheme}://alice:{pw}@db.example:5432/mlflow", "{scheme}://:{pw}@host/p"):
        message = "failed: " + template + " (reason)"
        shown = redact(message.format(scheme=scheme, pw=password))
        assert shown == message.format(scheme=scheme, pw="***"), template


@pytest.mark.parametrize("password", ["p/ss", "p#ss", "p?ss", "p@ss", "a/b#c?d@e", "p@ss@word"])
def test_each_character_that_ends_a_parsed_userinfo_is_masked(password):
    assert redact(f"postgresql://fer:{password}@db/x") == "postgresql://fer:***@db/x"


def test_a_query_token_in_the_tracking_uri_is_not_printed(workdir, monkeypatch, capsys):
    from mlflow_helpers import free_port

    (workdir / "s.yaml").write_text("name: s\nbudget: {num_samples: 1, max_epochs: 1}\nspace:\n  model: basic\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}/?token=SECRETTOKEN")
    assert main(["run", "s.yaml"]) == 1
    captured = capsys.readouterr()
    assert "token=***" in captured.err and "SECRETTOKEN" not in captured.out + captured.err


def test_tracking_json_and_sweep_json_pass_through_redact(workdir):
    # Both files are written as one JSON text through redact(); a secret in any value is masked.
    state = {"store": "http://u:SECRET@h", "params": {"data.source": "s3://b/x?token=SECRET"}}
    assert "SECRET" not in redact(json.dumps(state))
    assert json.loads(redact(json.dumps(state)))["params"]["data.source"] == "s3://b/x?token=***"
