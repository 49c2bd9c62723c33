"""RFC 2231 parameters the stdlib raises on: the message parses, with a defect; others read as the stdlib reads them."""

from __future__ import annotations

import email.message
import email.utils
import random
import time
from email.message import Message
from types import ModuleType

import pytest

from inbound.processing import rfc2231
from inbound.processing.parse import parse_message

from .harness import holds_in_a_fresh_interpreter, pristine_copy

HEAD = b'From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="a"\r\n\r\n'
TEXT = b"--a\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
PDF = b"--a\r\nContent-Type: application/pdf\r\n"


@pytest.fixture(scope="module")
def stdlib_utils() -> ModuleType:
    """A fresh copy of email.utils, which nothing has patched."""
    return pristine_copy(email.utils)


@pytest.mark.parametrize(
    ("part", "defect", "filename"),
    [
        (
            PDF + b"Content-Disposition: attachment; filename*=utf-8''a.pdf; filename*0=b.pdf\r\n\r\nDATA\r\n",
            rfc2231.WHOLE_AND_IN_SECTIONS,
            "b.pdf",
        ),
        (
            PDF + b"Content-Disposition: attachment; filename*=utf\x00-8''a.pdf\r\n\r\nDATA\r\n",
            rfc2231.NUL_IN_CHARSET,
            "a.pdf",
        ),
        (
            b"--a\r\nContent-Type: application/pdf; name*=utf\x00-8''a.pdf\r\n\r\nDATA\r\n",
            rfc2231.NUL_IN_CHARSET,
            "a.pdf",
        ),
        (
            b"--a\r\nContent-Type: text/plain; charset*=utf-8''utf-8; charset*0=x\r\n\r\nhi\r\n",
            rfc2231.WHOLE_AND_IN_SECTIONS,
            None,
        ),
        (
            b"--a\r\nContent-Type: multipart/mixed; boundary*=x; boundary*0=y\r\n\r\nhi\r\n",
            rfc2231.WHOLE_AND_IN_SECTIONS,
            None,
        ),
        (
            b"--a\r\nContent-Type: multipart/mixed; boundary*=utf\x00-8''b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n",
            rfc2231.NUL_IN_CHARSET,
            None,
        ),
    ],
    ids=["filename*+*0", "filename* NUL", "name* NUL", "charset*+*0", "boundary*+*0", "boundary* NUL"],
)
def test_the_parameters_the_stdlib_raises_on_do_not_fail_the_message(
    part: bytes, defect: str, filename: str | None
) -> None:
    """The stdlib raised TypeError or ValueError: in get_filename, get_param, and the parser's own get_boundary."""
    parsed = parse_message(HEAD + TEXT + part + b"--a--\r\n")
    if filename is None:  # a text part after ours
        assert (parsed.text or "").split() == ["hello", "hi"]
    else:
        assert (parsed.text, [a.filename for a in parsed.attachments]) == ("hello", [filename])
    assert defect in parsed.defects


def random_params(rng: random.Random) -> list[tuple[str, str]]:
    """A content type and a few parameters, plain, RFC 2231 encoded, in sections, whole and in sections at once."""
    names = ["name", "name*", "name*0", "name*1", "name*0*", "name*1*", "charset", "charset*", "x*2"]
    values = ["a", '"b c"', "utf-8''%E2%82%AC", "''d", "iso-8859-1'en'%E9", "%41", "e'f"]
    return [("text/plain", "")] + [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(0, 5))]


def from_sections(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """*params* without each ``name*`` whose name also comes in numbered sections (``name*0``, ``name*1*``...)."""
    sectioned = {name.split("*")[0] for name, _ in params[1:] if name.split("*")[1:2] not in ([], [""])}
    return params[:1] + [(n, v) for n, v in params[1:] if not (n.count("*") == 1 and n[:-1] in sectioned)]


def test_parameters_are_read_as_the_stdlib_reads_them_or_from_their_sections(stdlib_utils: ModuleType) -> None:
    rng = random.Random(2231)
    raised = 0
    for _ in range(20_000):
        params = random_params(rng)
        try:
            expected = stdlib_utils.decode_params(params)
        except TypeError:  # whole and in sections
            raised += 1
            expected = stdlib_utils.decode_params(from_sections(params))
        assert rfc2231.decode_params(params) == expected, params
    assert raised > 1000  # the shapes the stdlib raises on were among them


def test_a_parameter_whole_and_in_sections_is_read_from_its_sections(stdlib_utils: ModuleType) -> None:
    params = [("attachment", ""), ("filename*", "utf-8''whole.pdf"), ("filename*1", ".pdf"), ("filename*0", "sections")]
    with rfc2231.noting_defects() as noted:
        decoded = rfc2231.decode_params(params)
    assert decoded == stdlib_utils.decode_params([params[0], *params[2:]])
    assert email.utils.collapse_rfc2231_value(dict(decoded)["filename"]) == "sections.pdf"
    assert noted == [rfc2231.WHOLE_AND_IN_SECTIONS]


def test_what_the_parse_worker_imports_puts_it_in_the_stdlib() -> None:
    holds_in_a_fresh_interpreter(  # work is what the parse worker runs its jobs with
        "import email.message, email.utils, inbound.processing.work, inbound.processing.rfc2231 as r;"
        " assert email.utils.decode_params is r.decode_params;"
        " assert email.message._parseparam is r.parse_params"
    )


def test_a_parameter_list_is_split_as_the_stdlib_splits_it() -> None:
    stdlib = pristine_copy(email.message)._parseparam
    rng = random.Random(7)
    for _ in range(20_000):
        value = "".join(rng.choices(';"\\= aB\t', k=rng.randint(0, 14)))
        assert rfc2231.parse_params(value) == stdlib(value), value


def test_a_parameter_list_is_split_in_linear_time() -> None:
    """The stdlib counted the quotes before each ";" from its piece's start: 40 KB of them in a file name, 1.6 s."""
    message = (
        HEAD
        + TEXT
        + PDF
        + b'Content-Disposition: attachment; filename="'
        + b";" * 200_000
        + b'"\r\n\r\nDATA\r\n--a--\r\n'
    )
    started = time.monotonic()
    parsed = parse_message(message)
    assert time.monotonic() - started < 5
    assert [a.filename for a in parsed.attachments] == [";" * rfc2231.MAX_FILE_NAME]


def file_name_message(name: bytes) -> bytes:
    return HEAD + TEXT + PDF + b'Content-Disposition: attachment; filename="' + name + b'"\r\n\r\nDATA\r\n--a--\r\n'


@pytest.mark.parametrize(
    ("between", "kept"),
    [(b" ", "a" * 142), (b" x ", "a x " * 124 + "a")],  # the whole words of the first 2,000 characters
    ids=["adjacent", "apart"],
)
def test_a_file_name_of_64000_encoded_words_is_read_up_to_its_first_2000_characters(between: bytes, kept: str) -> None:
    """Every reader decodes a file name with decode_header, quadratic in its words: 5 s for these, 21.8 s for
    128,000 words, and 256,000 had the message Failed at parse_timeout."""
    raw = file_name_message(between.join([b"=?utf-8?Q?a?="] * 64_000))
    started = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - started < 1  # 0.02 s here
    assert [a.filename for a in parsed.attachments] == [kept]
    assert rfc2231.FILE_NAME_CUT in parsed.defects


def test_file_names_of_encoded_word_openings_that_never_close_are_read_in_linear_time() -> None:
    """decode_header's regex (mail-parser's and mime.py's reading of a file name) looked for the end of each
    "=?x?q?" up to the end of the name: 2,000 characters of them took 5 ms a part, 5,000 parts 25 s."""
    name = b" ".join([b"=?x?q?"] * 400)
    part = PDF + b'Content-Disposition: attachment; filename="' + name + b'"\r\n\r\nDATA\r\n'
    started = time.monotonic()
    parsed = parse_message(HEAD + TEXT + part * 1_000 + b"--a--\r\n")
    assert time.monotonic() - started < 2  # 0.1 s here; 5 s before
    assert {a.filename for a in parsed.attachments} == {" ".join(["=?x?q?"] * 285)}  # the whole ones of 2,000
    assert rfc2231.FILE_NAME_CUT in parsed.defects


def test_a_file_name_of_2000_characters_is_read_whole() -> None:
    name = " ".join(["=?utf-8?B?44GC44GE44GG44GI44GK?="] * 60) + " " + "x" * 16 + ".pdf"
    assert len(name) == rfc2231.MAX_FILE_NAME
    parsed = parse_message(file_name_message(name.encode()))
    assert [a.filename for a in parsed.attachments] == ["あいうえお" * 60 + " " + "x" * 16 + ".pdf"]
    assert rfc2231.FILE_NAME_CUT not in parsed.defects


def test_a_long_rfc2231_file_name_is_cut_to_2000_characters_of_its_bytes() -> None:
    part = Message()
    part["Content-Disposition"] = f"attachment; filename*=utf-8''{'%C3%A9' * 1_500}; size={'1' * 3_000}"
    with rfc2231.noting_defects() as noted:
        assert (part.get_filename(), part.get_param("size", header="content-disposition")) == ("é" * 1_000, "1" * 3_000)
    assert noted == [rfc2231.FILE_NAME_CUT, rfc2231.FILE_NAME_CUT]  # read twice, cut each time
