"""A configuration with several mistakes: every one reported at once, streams named by name.

In process, over real files: what ``load_settings`` raises is what ``check-config``,
``serve`` and a reload on HUP show (test_config.py runs the CLI).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inbound.config import load_settings
from inbound.errors import ConfigError

from .harness import SECRET, stream_toml


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    """Every problem, by key (a key named twice fails the test), after checking the message's lines."""
    path = tmp_path / "inbound.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, {})
    found = raised.value.problems
    assert str(raised.value).splitlines() == [f"{path}: {key}: {problem}" for key, problem in found]
    assert len({key for key, _ in found}) == len(found), found
    return dict(found)


def test_every_problem_in_every_section_and_stream_at_once(tmp_path: Path) -> None:
    support = stream_toml("support", ["*@in.test"], "ftp://hooks.example.test/")
    sales = stream_toml("sales", ["*@sales.test", "not an address"], "https://hooks.example.test/")
    sales = sales.replace(SECRET, "hunter2") + "colour = 'blue'\n"
    text = f'[smtp]\nmax_recipients = 0\n[webhooks]\ntimeout = "soon"\n[surprise]\n{support}{sales}'
    found = problems(tmp_path, text)
    assert list(found) == [  # sections in their usual order, [[streams]] last, each stream in turn
        "surprise",
        "smtp.max_recipients",
        "webhooks.timeout",
        "streams.support.webhook_url",
        "streams.sales.colour",
        "streams.sales.addresses",
        "streams.sales.signing_secret",
    ]
    assert found["surprise"].startswith("unknown section")
    assert found["smtp.max_recipients"] == "must be at least 1"
    assert "'soon'" in found["webhooks.timeout"]
    assert found["streams.support.webhook_url"] == "'ftp://hooks.example.test/' is not an http(s) URL"
    assert found["streams.sales.colour"].startswith("unknown key")
    assert found["streams.sales.addresses"] == "'not an address' is not an address or *@domain"
    assert found["streams.sales.signing_secret"].startswith('must start with "whsec_"')


def test_a_key_that_cannot_be_read_is_one_problem_not_a_cascade(tmp_path: Path) -> None:
    no_url = stream_toml("support", ["*@in.test"], "x").replace('webhook_url = "x"\n', "")
    found = problems(tmp_path, f'[smtp]\nmax_message_size = "25MB"\nlisten = "nowhere"\n{no_url}')
    assert found == {
        "smtp.listen": "'nowhere' is not host:port",
        "smtp.max_message_size": "must be int, not str ('25MB')",
        "streams.support.webhook_url": "is required",  # not also "'' is not an http(s) URL"
    }


def test_streams_without_a_usable_name_are_named_by_place(tmp_path: Path) -> None:
    first = stream_toml("support", ["*@in.test"], "https://hooks.example.test/")
    again = stream_toml("support", ["*@other.test"], "https://hooks.example.test/")
    unnamed = stream_toml("Big Team", ["*@big.test"], "https://hooks.example.test/")
    typed = stream_toml("x", ["*@x.test"], "https://hooks.example.test/").replace('name = "x"', "name = 5")
    found = problems(tmp_path, first + again + unnamed + typed + "[[streams]]\n")
    assert found == {
        "streams[1].name": "duplicate stream name 'support'",
        "streams[2].name": "must be 1-63 of a-z, 0-9 and '_', starting with a letter or digit",
        "streams[3].name": "must be str, not int (5)",  # and nothing about its shape
        "streams[4].name": "is required",
        "streams[4].addresses": "is required",
        "streams[4].webhook_url": "is required",
        "streams[4].signing_secret": "is required (or signing_secrets)",
    }


def test_no_streams_is_one_of_the_problems(tmp_path: Path) -> None:
    assert problems(tmp_path, "[smtp]\nmax_recipients = 0\n") == {
        "smtp.max_recipients": "must be at least 1",
        "streams": "no [[streams]]: inbound would accept no mail (see examples/inbound.toml)",
    }


def test_a_tls_section_missing_its_files_says_so_once(tmp_path: Path) -> None:
    stream = stream_toml("support", ["*@in.test"], "https://hooks.example.test/")
    found = problems(tmp_path, f'[smtp.tls]\nmin_version = "SSLv3"\n{stream}')
    assert found == {
        "smtp.tls.cert_file": "is required with [smtp.tls]",
        "smtp.tls.key_file": "is required with [smtp.tls]",
        "smtp.tls.min_version": "must be one of TLSv1.2, TLSv1.3",
    }


def test_values_no_system_call_clock_or_int_can_take_are_problems_not_tracebacks(tmp_path: Path) -> None:
    stream = stream_toml("support", ["*@in.test"], "https://hooks.example.test/") + "max_requests_per_second = inf\n"
    text = (
        '[storage]\ndata_dir = "da\\u0000ta"\n'
        '[smtp.tls]\ncert_file = "a\\u0000b"\nkey_file = "key.pem"\n'
        f'[processing]\nparse_memory_limit = "{"9" * 5000}MiB"\n'
        f'[webhooks]\ntimeout = "1{"0" * 400}s"\n'
        f"{stream}"
    )
    found = problems(tmp_path, text)
    assert found["storage.data_dir"] == "must not contain a NUL character"
    assert found["smtp.tls.cert_file"] == "must not contain a NUL character"
    assert found["processing.parse_memory_limit"].startswith('must be "<N>x + <size>"')
    assert found["webhooks.timeout"] == f"'1{'0' * 400}s' is longer than ten years (3650d)"
    assert found["streams.support.max_requests_per_second"] == "must be a finite number"


def test_an_integer_too_large_for_a_float_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    stream = stream_toml("support", ["*@in.test"], "https://hooks.example.test/")
    found = problems(tmp_path, f"{stream}max_requests_per_second = 1{'0' * 400}\n")
    assert found == {"streams.support.max_requests_per_second": "must be a finite number"}
