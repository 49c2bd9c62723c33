"""The linear replacement of dkimpy's trailing-blank removal gives dkimpy's own output, and is in effect."""

from __future__ import annotations

import random
import time
from types import ModuleType

import dkim.canonicalization
import pytest

# Imported for what importing it does: it puts dkimcanon in dkimpy, as in the pipeline and the edge.
import inbound.processing.auth  # noqa: F401
from inbound.processing import dkimcanon

from .harness import holds_in_a_fresh_interpreter, pristine_copy


@pytest.fixture(scope="module")
def dkimpy_as_shipped() -> ModuleType:
    """A fresh copy of dkimpy's canonicalization module, which nothing has patched."""
    return pristine_copy(dkim.canonicalization)


def random_bodies(count: int) -> list[bytes]:
    """Short strings of blanks, CR, LF and text in every order: where the two regexes could differ."""
    rng = random.Random(8617)
    return [bytes(rng.choices(b" \t\r\na", k=rng.randrange(0, 40))) for _ in range(count)]


def test_it_removes_what_dkimpy_removes(dkimpy_as_shipped: ModuleType) -> None:
    for body in random_bodies(30_000):
        assert dkimcanon.strip_trailing_whitespace(body) == dkimpy_as_shipped.strip_trailing_whitespace(body), body
        assert dkim.canonicalization.Relaxed.canonicalize_body(body) == dkimpy_as_shipped.Relaxed.canonicalize_body(
            body
        ), body


def test_importing_the_checks_puts_it_in_dkimpy() -> None:
    holds_in_a_fresh_interpreter(  # the checks are what the pipeline and the edge import to run dkimpy
        "import dkim.canonicalization, inbound.processing.auth, inbound.processing.dkimcanon as d;"
        " assert dkim.canonicalization.strip_trailing_whitespace is d.strip_trailing_whitespace"
    )


def test_a_run_of_blanks_no_crlf_ends_takes_linear_time() -> None:
    body = b" \t" * 100_000 + b"x\r\n"  # 200 KB: dkimpy's own regex takes about 36 s, this a few ms
    started = time.monotonic()
    assert dkim.canonicalization.Relaxed.canonicalize_body(body) == b" x\r\n"
    assert time.monotonic() - started < 2


def test_within_one_message_s_checks_a_body_is_canonicalized_once_per_algorithm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relaxed = dkim.canonicalization.Relaxed.canonicalize_body
    runs: list[bytes] = []

    def counted(body: bytes) -> bytes:
        runs.append(body)
        return relaxed(body)

    monkeypatch.setattr(dkim.canonicalization.Relaxed, "canonicalize_body", staticmethod(counted))
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    simple = dkim.canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    body, other = b"a  b \r\n\r\n", b"c\r\n"
    with dkimcanon.each_body_canonicalized_once():
        first = [policy.canonicalize_body(body) for _ in range(50)]
        assert simple.canonicalize_body(body) == b"a  b \r\n"  # the other algorithm: its own
        assert policy.canonicalize_body(bytes(bytearray(body))) == b"a b\r\n"  # an equal body, another object
        assert policy.canonicalize_body(other) == b"c\r\n"
    assert first == [b"a b\r\n"] * 50
    assert runs == [body, other]
    policy.canonicalize_body(body)  # after the block: nothing kept
    assert runs == [body, other, body]
