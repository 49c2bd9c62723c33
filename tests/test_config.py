"""Configuration: every mistake stops start-up with the file, the key and the problem."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from .harness import ROOT, SECRET, run_cli

pytestmark = pytest.mark.e2e  # runs the inbound CLI as a real process

VALID = f"""
[smtp]
listen = "127.0.0.1:2525"
hostname = "mx.example.test"
max_message_size = 26214400
[storage]
data_dir = "var"
[bus]
backend = "embedded"
[webhooks]
allow_private = false
retry_schedule = ["1m", "5m"]
timeout = "30s"
[http]
listen = "127.0.0.1:8080"
tokens = ["act-0123456789abcdefghijklmn"]
read_only_tokens = ["read-0123456789abcdefghijklmn"]
[[streams]]
name = "support"
addresses = ["*@in.example.test", "help@example.org"]
webhook_url = "https://app.example.com/inbound"
signing_secret = "{SECRET}"
block_senders = ["*@spam.example", "bad@example.net"]
"""


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("check-config", config=path, check=False)
    return result.returncode, result.stdout + result.stderr


def test_valid_config_and_the_example_pass(tmp_path: Path) -> None:
    assert check(tmp_path, VALID)[0] == 0
    for shipped in ("examples", "deploy"):
        result = run_cli("check-config", str(ROOT / shipped / "inbound.toml"), config=tmp_path / "unused.toml")
        assert "OK" in result.stdout, shipped


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("[webhooks]\n", "[webhooks]\nalow_private = true\n", "webhooks.alow_private", "unknown key"),
        ("[bus]\n", "[buss]\n", "buss", "unknown section"),
        ("max_message_size = 26214400", 'max_message_size = "25MB"', "smtp.max_message_size", "must be int"),
        ("max_message_size = 26214400", "max_message_size = true", "smtp.max_message_size", "must be int"),
        ('listen = "127.0.0.1:2525"', 'listen = "127.0.0.1"', "smtp.listen", "is not host:port"),
        ('backend = "embedded"', 'backend = "rabbit"', "bus.backend", 'must be "embedded" or "kafka"'),
        ('timeout = "30s"', 'timeout = "30 seconds"', "webhooks.timeout", "is not a duration"),
        ('["1m", "5m"]', '["1m", "soon"]', "webhooks.retry_schedule", "is not a duration"),
        ("https://app.example.com/inbound", "https://127.0.0.1/inbound", "streams.support.webhook_url", "not a public"),
        ("https://app.example.com/inbound", "http://10.1.2.3:8080/x", "streams.support.webhook_url", "not a public"),
        ("https://app.example.com/inbound", "http://localhost/x", "streams.support.webhook_url", "loopback"),
        (
            "https://app.example.com/inbound",
            "http://0x7f.0.0.1/x",
            "streams.support.webhook_url",
            "is 127.0.0.1, not a",
        ),
        ("https://app.example.com/inbound", "http://localhost./x", "streams.support.webhook_url", "loopback"),
        ('timeout = "30s"', 'timeout = "30s"\nmax_hold = "0s"', "webhooks.max_hold", "longer than 0s"),
        ('timeout = "30s"', 'timeout = "30s"\nca_file = "nope.pem"', "webhooks.ca_file", "no file"),
        (
            'timeout = "30s"',
            'timeout = "30s"\nalert_url = "https://ops.example.com/a"',
            "webhooks.alert_signing_secret",
            "is required with alert_url",
        ),
        ('timeout = "30s"', 'timeout = "30s"\nalert_url = "http://127.1/a"', "webhooks.alert_url", "not a public"),
        (
            'name = "support"',
            'name = "support"\nsilence_alert_after = "never"',
            "streams.support.silence_alert_after",
            "is not a duration",
        ),
        (
            "https://app.example.com/inbound",
            "ftp://app.example.com/",
            "streams.support.webhook_url",
            "not an http(s) URL",
        ),
        (SECRET, "hunter2", "streams.support.signing_secret", "whsec_"),
        (
            'name = "support"',
            'name = "support"\nmax_requests_per_second = 0',
            "streams.support.max_requests_per_second",
            "more than 0",
        ),
        (
            'name = "support"',
            'name = "support"\nmax_requests_per_second = "5"',
            "streams.support.max_requests_per_second",
            "a number",
        ),
        (f'"{SECRET}"', f'"{SECRET}"\nsigning_secrets = ["{SECRET}"]', "streams.support.signing_secrets", "not both"),
        (f'signing_secret = "{SECRET}"', "signing_secrets = []", "streams.support.signing_secrets", "at least one"),
        (f'signing_secret = "{SECRET}"', 'signing_secrets = ["whsec_x"]', "streams.support.signing_secrets", "base64"),
        (f'signing_secret = "{SECRET}"', "", "streams.support.signing_secret", "is required (or signing_secrets)"),
        ('name = "support"', 'name = "Support Team"', "streams[0].name", "must be 1-63"),
        ('"help@example.org"]', '"help at example.org"]', "streams.support.addresses", "is not an address"),
        ('webhook_url = "https://app.example.com/inbound"\n', "", "streams.support.webhook_url", "is required"),
        ("[smtp]", "[smtp", "", "not valid TOML"),
        ('listen = "127.0.0.1:8080"', 'listen = "8080"', "http.listen", "is not host:port"),
        ('"act-0123456789abcdefghijklmn"', '"secret"', "http.tokens", "24 or more"),
        ('"read-0123456789abcdefghijklmn"', '"act-0123456789abcdefghijklmn"', "http.read_only_tokens", "also in"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    assert old in VALID
    code, output = check(tmp_path, VALID.replace(old, new, 1))
    assert code != 0
    assert f"bad.toml: {key}" in output if key else "bad.toml" in output
    assert problem in output


def test_check_config_lists_every_problem_one_a_line(tmp_path: Path) -> None:
    text = VALID.replace("max_message_size = 26214400", "max_message_size = true").replace(
        "https://app.example.com/inbound", "ftp://app.example.com/"
    )
    code, output = check(tmp_path, text)
    assert code != 0
    path = tmp_path / "bad.toml"
    assert output.splitlines() == [
        "Error: 2 configuration errors:",
        f"{path}: smtp.max_message_size: must be int, not bool (True)",
        f"{path}: streams.support.webhook_url: 'ftp://app.example.com/' is not an http(s) URL",
    ]


def test_signing_secrets_and_a_rate_limit(tmp_path: Path) -> None:
    new = "whsec_" + base64.b64encode(b"the-new-secret-of-32-bytes-long!").decode()
    text = VALID.replace(f'signing_secret = "{SECRET}"', f'signing_secrets = ["{new}", "{SECRET}"]').replace(
        'name = "support"', 'name = "support"\nmax_requests_per_second = 2.5'
    )
    assert check(tmp_path, text)[0] == 0


def test_private_urls_allowed_when_asked(tmp_path: Path) -> None:
    text = VALID.replace("allow_private = false", "allow_private = true").replace(
        "https://app.example.com/inbound", "http://127.0.0.1:8025/inbound"
    )
    assert check(tmp_path, text)[0] == 0


def test_same_address_in_two_streams_is_an_error(tmp_path: Path) -> None:
    second = VALID[VALID.index("[[streams]]") :].replace('name = "support"', 'name = "other"')
    code, output = check(tmp_path, VALID + second)
    assert code != 0
    assert "streams.other.addresses" in output
    assert "already in stream 'support'" in output


@pytest.mark.parametrize(
    ("spelled", "first"),
    [
        ("*@in.example.test.", "*@in.example.test"),  # a trailing dot
        ("*@IN.example.TEST", "*@in.example.test"),
        ("Help@Example.ORG.", "*@in.example.test"),  # the first stream lists help@example.org
        ("*@xn--n-mga.example.test", "*@ïn.example.test"),  # the A-label of a Unicode domain
    ],
)
def test_one_address_in_two_spellings_in_two_streams_is_an_error(tmp_path: Path, spelled: str, first: str) -> None:
    """Routing compares canonical domains: the stream listed last would get all the mail of both."""
    text = VALID.replace('"*@in.example.test"', f'"{first}"')
    second = text[text.index("[[streams]]") :].replace('name = "support"', 'name = "other"')
    second = second.replace(f'addresses = ["{first}", "help@example.org"]', f'addresses = ["{spelled}"]')
    code, output = check(tmp_path, text + second)
    assert code != 0, output
    assert "streams.other.addresses" in output
    assert f"{spelled!r} is already in stream 'support'" in output


def test_a_stream_may_name_its_own_address_in_two_spellings(tmp_path: Path) -> None:
    both = 'addresses = ["*@bücher.example", "*@xn--bcher-kva.example", "help@example.org", "help@example.org."]'
    text = VALID.replace('addresses = ["*@in.example.test", "help@example.org"]', both)
    assert check(tmp_path, text)[0] == 0


def test_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", config=tmp_path / "nope.toml", check=False)
    assert result.returncode != 0
    assert "nope.toml: file not found" in result.stderr


def test_serve_refuses_a_data_dir_without_marker(tmp_path: Path) -> None:
    path = tmp_path / "inbound.toml"
    path.write_text(VALID)
    result = run_cli("serve", config=path, check=False)
    assert result.returncode != 0
    assert "does not exist" in result.stderr
    (tmp_path / "var").mkdir()
    result = run_cli("serve", config=path, check=False)
    assert result.returncode != 0
    assert "no .inbound-data marker" in result.stderr
    run_cli("init", config=path)
    assert (tmp_path / "var" / ".inbound-data").exists()


def test_the_data_dir_is_private_and_serve_refuses_one_that_is_not(tmp_path: Path) -> None:
    path = tmp_path / "inbound.toml"
    path.write_text(VALID)
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    run_cli("init", config=path)
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / ".inbound-data").stat().st_mode & 0o777 == 0o600
    data.chmod(0o750)
    result = run_cli("serve", config=path, check=False)
    assert result.returncode != 0
    assert "has mode 0750: group or others may read the mail in it" in result.stderr
    assert "storage.allow_shared_permissions = true" in result.stderr
    path.write_text(VALID.replace('data_dir = "var"', 'data_dir = "var"\nallow_shared_permissions = "yes"'))
    bad = run_cli("check-config", config=path, check=False)
    assert "storage.allow_shared_permissions" in bad.stderr


def test_api_role_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "inbound.toml"
    text = VALID.replace('tokens = ["act-0123456789abcdefghijklmn"]\n', "")
    path.write_text(text.replace('read_only_tokens = ["read-0123456789abcdefghijklmn"]\n', ""))
    run_cli("init", config=path)
    result = run_cli("serve", "--roles", "api", config=path, check=False)
    assert result.returncode != 0
    assert "inbound.toml: http.tokens: the api role needs at least one token" in result.stderr
