"""The parse job's pure parts, in process: MIME shape limits, the answer's wire format, the [processing] keys."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from inbound.config import MIB, ProcessingSettings, StreamSettings, load_settings
from inbound.envelope import Envelope, Recipient
from inbound.errors import ConfigError
from inbound.processing.formats import Rendered
from inbound.processing.isolation import IsolatedParser
from inbound.processing.job import (
    PEAK_MEASURED_FROM,
    Outcome,
    ParseJob,
    RenderRequest,
    address_space,
    decode_outcome,
    encode_outcome,
)
from inbound.processing.mime import message_tree, walk
from inbound.processing.mimeshape import Shape, mime_shape
from inbound.processing.parse import parse_message
from inbound.processing.repair import repair_header_section
from inbound.processing.work import run_job

from .harness import SECRET, attachment_message, simple_message, stream_toml, write_config

STREAM = StreamSettings("support", ("*@in.test",), "https://hook.example/", SECRET)
ENVELOPE = Envelope(
    "01M83PFWMTV943JEDS027E9WV8",
    "a@sender.test",
    (Recipient("help@in.test", "support", None),),
    "192.0.2.1:1",
    "h",
    False,
    "2026-11-23T00:00:00.000Z",
)


def nested(depth: int) -> bytes:
    """A message whose multiparts nest *depth* deep, each level one text part beside the next level."""
    opening = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (level, level + 1)
        for level in range(depth - 1)
    )
    innermost = b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n--b%d--\r\n" % (depth - 1, depth - 1)
    closing = b"".join(b"--b%d--\r\n" % level for level in reversed(range(depth - 1)))
    head = b'From: a@sender.test\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    return head + opening + innermost + closing


def many_parts(parts: int) -> bytes:
    head = b"From: a@sender.test\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    return head + b"--x\r\nContent-Type: text/plain\r\n\r\npart\r\n" * parts + b"--x--\r\n"


def job(raw: bytes, **limits: int) -> ParseJob:
    return ParseJob(raw, ENVELOPE, (RenderRequest(STREAM, "id-support", None),), ProcessingSettings(**limits))  # type: ignore[arg-type]


def test_mime_shape_follows_nesting_and_counts_parts() -> None:
    assert mime_shape(simple_message(), 100, 10_000) == Shape(0, 0)
    assert mime_shape(nested(3), 100, 10_000) == Shape(3, 3)
    assert mime_shape(many_parts(5), 100, 10_000) == Shape(1, 5)
    # A delimiter-like line whose boundary no Content-Type declares is body text, not a part.
    assert mime_shape(many_parts(2).replace(b"part\r\n", b"part\r\n--y\r\n", 1), 100, 10_000) == Shape(1, 2)


def test_mime_shape_reads_a_boundary_parameter_in_any_case_and_keeps_the_value_as_written() -> None:
    raw = many_parts(3).replace(b"boundary=x", b'BoUnDaRy = "MiXed"').replace(b"--x", b"--MiXed")
    assert mime_shape(raw, 100, 10_000) == Shape(1, 3)
    assert mime_shape(raw.replace(b"--MiXed", b"--mixed"), 100, 10_000) == Shape(0, 0)  # not the declared one


def test_mime_shape_stops_scanning_past_a_limit() -> None:
    assert mime_shape(nested(5_000), 100, 10_000).depth == 101
    assert mime_shape(many_parts(1_000_000), 100, 10_000).parts == 10_001


@pytest.mark.parametrize(
    ("parameter", "boundary", "line_end"),
    [
        (b"boundary=x", b"x", b"\r"),  # bare CR: the stdlib's parser ends a line there too
        (b"boundary*=us-ascii''x", b"x", b"\r\n"),  # RFC 2231
        (b"boundary*0=x; boundary*1*=%79", b"xy", b"\r\n"),  # RFC 2231 sections
        (b'boundary="' + b"L" * 300 + b'"', b"L" * 300, b"\r\n"),
        (b'boundary="=?gb2312?Q?x?="', b"=?gb18030?Q?x?=", b"\r\n"),  # as repair.py hands the parser the header
    ],
    ids=["bare CR", "boundary*=", "boundary*0=", "300 characters", "repaired top-level header"],
)
def test_every_part_the_parser_finds_is_counted(parameter: bytes, boundary: bytes, line_end: bytes) -> None:
    """Each of these let 20,000 parts through max_mime_parts (10,000), 1,000,000 with bare CRs: Failed for memory."""
    head = b"Received: x\r\nFrom: a@sender.test\r\nContent-Type: multipart/mixed; " + parameter + b"\r\n\r\n"
    part = b"--" + boundary + line_end + b"Content-Type: text/plain" + line_end + line_end + b"p" + line_end
    raw = head + part * 20 + b"--" + boundary + b"--" + line_end
    assert len(message_tree(repair_header_section(raw)[0]).get_payload()) == 20  # what the parser makes of it
    assert mime_shape(raw, 100, 10_000) == Shape(1, 20)
    assert run_job(job(raw, max_mime_parts=19)).failure == "more than max_mime_parts (19) MIME parts"
    nested = head + b"".join(
        b"--%s%sContent-Type: multipart/mixed; boundary=b%d%s%s" % (b, line_end, i, line_end, line_end)
        for i, b in enumerate([boundary] + [b"b%d" % i for i in range(30)])
    )
    assert mime_shape(nested, 100, 10_000) == Shape(31, 31)


def test_more_multipart_fields_than_parts_allowed_are_too_many_parts_without_reading_them() -> None:
    """Reading each costs the stdlib 5 us: 28 MB of them in a text body took the scan 4.8 s."""
    fields = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n" % i for i in range(12))
    raw = simple_message() + fields
    assert mime_shape(raw, 100, 10) == Shape(0, 11)
    assert mime_shape(raw, 100, 11) == Shape(0, 0)  # read: no line is a delimiter of theirs


def shape_of_tree(message: Message) -> Shape:
    """How deep the stdlib's tree nests multiparts and how many parts they hold (attached messages walked into)."""
    depth = parts = 0
    stack = [(message, 0)]
    while stack:
        node, multiparts = stack.pop()
        children = node.get_payload() if node.is_multipart() else []
        inside = multiparts + (node.get_content_maintype() == "multipart")
        if node.get_content_maintype() == "multipart":
            parts += len(children)
            depth = max(depth, inside if children else 0)
        stack.extend((child, inside) for child in children)
    return Shape(depth, parts)


def random_multipart(rng: random.Random, level: int = 0) -> bytes:
    """A multipart (perhaps nested) in the ways a boundary can be declared and a line ended, some of them odd."""
    boundary = rng.choice([b"x", b"b'()+_,-./:=?", b"a b", b"L" * 250, b"=?utf-8?Q?x?=", b"\xe9t\xe9", b"-x", b"x--"])
    boundary += b"%d" % level
    end = rng.choice([b"\r\n", b"\n", b"\r"])
    parameter = rng.choice(
        [
            b'boundary="%s"' % boundary,
            b"boundary=%s" % boundary,
            b"boundary*=us-ascii''%s" % boundary.replace(b" ", b"%20"),
            b'boundary*0="%s"; boundary*1=z' % boundary,
            b"boundary*1=z; boundary*0*=''%s" % boundary.replace(b" ", b"%20"),
            b"boundary*=undefined''%s" % boundary.replace(b" ", b"%20"),
        ]
    )
    if parameter.startswith(b"boundary*0") or parameter.startswith(b"boundary*1"):
        boundary += b"z"
    name = rng.choice([b"Content-Type", b"content-type", b"CONTENT-TYPE"])
    fold = rng.choice([b" ", end + b"\t"])
    out = name + b": multipart/mixed;" + fold + parameter + end + end
    for _ in range(rng.randrange(0, 4)):
        trailer = rng.choice([b"", b" \t", b"x"])
        out += b"--" + boundary + trailer + end
        leaf = b"Content-Type: text/plain" + end * 2 + b"p" + end
        out += random_multipart(rng, level + 1) if level < 3 and rng.random() < 0.5 else leaf
    if rng.random() < 0.8:
        out += b"--" + boundary + b"--" + rng.choice([b"", b" "]) + end
    return out


def test_the_shape_is_never_less_than_the_stdlibs_tree() -> None:
    """Over-counting is safe, under-counting lets a tree past the limits: the scan against the parser itself."""
    rng = random.Random(2046)
    nested = 0
    for _ in range(3_000):
        raw = b"Received: x\r\nFrom: a@sender.test\r\n" + random_multipart(rng)
        tree = shape_of_tree(message_tree(repair_header_section(raw)[0]))
        shape = mime_shape(raw, 100, 10_000)
        assert shape.parts >= tree.parts, raw
        assert shape.depth >= tree.depth, raw
        nested += tree.depth > 1
    assert nested > 500  # trees the parser built deep were among them


def test_too_deep_or_too_many_parts_is_failed_with_the_limit_and_within_them_parses() -> None:
    assert run_job(job(nested(101))).failure == "MIME parts nested more than max_mime_depth (100) deep"
    assert run_job(job(many_parts(11), max_mime_parts=10)).failure == "more than max_mime_parts (10) MIME parts"
    within = run_job(job(nested(50)))
    assert within.failure is None
    assert within.bodies is not None
    assert isinstance(within.bodies["support"], Rendered)


def undeclared_parts(parts: int) -> bytes:
    """A multipart whose boundary never comes, *parts* parts under a delimiter no field declares (mime.py recovers)."""
    head = b'From: a@sender.test\r\nSubject: broken\r\nContent-Type: multipart/mixed; boundary="D"\r\n\r\n'
    return head + b"--Z\r\nContent-Type: application/pdf\r\n\r\np\r\n" * parts + b"--Z--\r\n"


def undeclared_nesting(levels: int, text: bytes = b"deep\r\n") -> bytes:
    """Multiparts whose boundary never comes, each holding the next under a delimiter no field declares."""
    head = b'From: a@sender.test\r\nSubject: broken\r\nContent-Type: multipart/mixed; boundary="D"\r\n\r\n'
    body = b"".join(b'--U%d\r\nContent-Type: multipart/mixed; boundary="D%d"\r\n\r\n' % (i, i) for i in range(levels))
    return head + body + b"--Z\r\nContent-Type: text/plain\r\n\r\n" + text + b"--Z--\r\n"


def test_parts_the_walk_recovers_are_held_to_the_limits_before_they_are_built() -> None:
    """The shape scan cannot see parts under a delimiter no field declares: 20,000 were delivered past
    max_mime_parts (10,000). The walk counts them before it builds them, and refuses as the scan does."""
    assert mime_shape(undeclared_parts(20_000), 100, 10_000) == Shape(0, 0)
    assert run_job(job(undeclared_parts(20_000))).failure == "more than max_mime_parts (10000) MIME parts"
    assert run_job(job(undeclared_parts(11), max_mime_parts=10)).failure == "more than max_mime_parts (10) MIME parts"
    assert run_job(job(undeclared_parts(10), max_mime_parts=10)).attachments == 10
    too_deep = run_job(job(undeclared_nesting(5), max_mime_depth=5))
    assert too_deep.failure == "MIME parts nested more than max_mime_depth (5) deep"
    assert run_job(job(undeclared_nesting(4), max_mime_depth=5)).failure is None


def test_multiparts_recovered_inside_recovered_ones_parse_at_most_twice_the_message_again() -> None:
    """Each recovery parsed the rest of the body again: 99 levels over 10 MB took 7.1 s of the parse worker."""
    text = b"deep\r\n" + b"y" * 76 * 2000 + b"\r\n"
    two = parse_message(undeclared_nesting(2, text))
    assert two.text == "deep\n" + "y" * 76 * 2000  # the CRLF before a delimiter is the delimiter's
    assert two.attachments == ()
    many = parse_message(undeclared_nesting(40, text))
    assert many.text is None
    [kept] = many.attachments
    assert text in kept.content
    assert "body: multiparts without their boundaries, nested past what recovery parses again" in many.defects


def test_a_message_attached_in_base64_is_read_for_its_headers_alone() -> None:
    """Its parts were built (200,000 in 3.1 s) though only its headers are read, and no limit counted them."""
    inner = b"From: c@sender.test\r\nSubject: inner\r\n" + many_parts(20).split(b"\r\n", 2)[2]
    raw = (
        b"From: a@sender.test\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(inner).replace(b"\n", b"\r\n")
        + b"--o--\r\n"
    )
    found = walk(message_tree(raw), 100, 10, len(raw))
    assert [(m["subject"], m.is_multipart()) for m in found.attached] == [("inner", False)]
    assert [a.content for a in found.attachments] == [inner]
    assert run_job(job(raw, max_mime_parts=10)).failure is None


def test_the_answer_survives_its_wire_format() -> None:
    outcome = Outcome(
        sender="a@sender.test",
        subject="Hi",
        attachments=2,
        bodies={
            "one": Rendered("application/json", b"{}" * 1000),
            "two": "cannot build payload: no",
            "three": Rendered("text/plain", b""),
        },
        peak_rss=123,
    )
    assert decode_outcome(b"".join(encode_outcome(outcome))) == outcome
    assert decode_outcome(b"".join(encode_outcome(Outcome.failed("why")))) == Outcome.failed("why")
    with pytest.raises(ValueError, match="past the end"):
        decode_outcome(b"".join(encode_outcome(outcome))[:-1])
    head = b'{"failure": 1, "sender": null, "subject": null, "attachments": null, "bodies": null, "peak_rss": 0}'
    with pytest.raises(TypeError, match="expected str or null, got int"):
        decode_outcome(len(head).to_bytes(8, "big") + head)


def processing(tmp_path: Path, body: str) -> ProcessingSettings:
    streams = stream_toml("support", ["*@in.test"], "http://127.0.0.1:1/hook")
    return load_settings(write_config(tmp_path, streams=streams, extra=f"[processing]\n{body}\n")).processing


@pytest.fixture
def parser() -> Iterator[IsolatedParser]:
    """A parser of the test's own; its worker starts at the first job, in the test's environment."""
    parser = IsolatedParser()
    yield parser
    parser.close()


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started from now on misbehave on request (tests/faults: an X-Test-Fault header)."""
    faults = Path(__file__).parent / "faults"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(faults), os.environ.get("PYTHONPATH", "")]))


def test_an_answer_announced_larger_than_any_honest_one_is_never_allocated() -> None:
    """The worker reads hostile bytes, so the parent trusts nothing it says: not even a length."""
    liar = "import sys; sys.stdout.buffer.write((1 << 60).to_bytes(8, 'big')); sys.stdout.flush(); sys.stdin.read()"
    parser = IsolatedParser()
    parser.worker = subprocess.Popen([sys.executable, "-c", liar], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        outcome = parser.run(job(simple_message()))
        assert outcome.failure == f"the parse worker announced an answer of {1 << 60} bytes, more than it can hold"
        assert parser.run(job(simple_message())).failure is None  # a new, honest worker took over
    finally:
        parser.close()


def test_a_worker_that_ended_between_jobs_is_closed_and_replaced(parser: IsolatedParser) -> None:
    assert parser.run(job(simple_message())).failure is None
    ended = parser.worker
    assert ended is not None
    assert ended.stdin is not None
    assert ended.stdout is not None
    ended.kill()
    ended.wait()
    assert parser.run(job(simple_message())).failure is None
    assert parser.worker is not ended
    assert ended.stdin.closed  # not left to the garbage collector
    assert ended.stdout.closed


@pytest.mark.usefixtures("faults")
def test_jobs_sent_ahead_survive_the_worker_dying_under_the_one_before(parser: IsolatedParser) -> None:
    """Each faulty message fails alone; the job already sent to the worker it killed is parsed by the next."""
    limits = ProcessingSettings(parse_timeout=5.0, memory_base=64 * MIB)

    def faulty(fault: str) -> ParseJob:
        return ParseJob(simple_message(extra=f"X-Test-Fault: {fault}\r\n"), ENVELOPE, job(b"").renders, limits)

    def normal(n: int) -> ParseJob:
        return ParseJob(simple_message(subject=f"normal {n}"), ENVELOPE, job(b"").renders, limits)

    jobs = [normal(0), faulty("segfault"), normal(1), faulty("exit"), normal(2), faulty("hang")]
    jobs += [normal(3), faulty("memory"), normal(4), normal(5)]
    outcomes = list(parser.run_all(jobs))
    assert [o.failure for o in outcomes] == [
        None,
        "the parse worker was killed by SIGSEGV while parsing this message",
        None,
        "the parse worker exited with status 3 while parsing this message",
        None,
        "parsing took longer than parse_timeout (5s)",
        None,
        "parsing needs more memory than parse_memory_limit (64 MiB)",
        None,
        None,
    ]
    assert [o.subject for o in outcomes if o.failure is None] == [f"normal {n}" for n in range(6)]


# A pipeline process parsing one message across a stop of it: the message's outcome is printed.
STOPPED_STAGE = """
import sys
from inbound.processing.isolation import IsolatedParser
from tests.harness import simple_message
from tests.test_isolation import job
parser = IsolatedParser()
assert parser.run(job(simple_message())).failure is None  # the worker is up
print(parser.run(job(simple_message(extra=f"X-Test-Fault: {sys.argv[1]}\\r\\n"), parse_timeout=1)).failure)
parser.close()
"""


@pytest.mark.usefixtures("faults")
@pytest.mark.parametrize("fault", ["stopparent", "freeze"], ids=["SIGSTOP of the pipeline process", "both frozen"])
def test_a_stop_of_the_pipeline_process_is_not_counted_against_the_parse(fault: str) -> None:
    """docker pause, a frozen cgroup, SIGSTOP, a stalled VM: a stop longer than parse_timeout in the middle of
    a parse had a healthy message Failed for parse_timeout, its answer there or the worker frozen too."""
    stage = subprocess.Popen(
        [sys.executable, "-c", STOPPED_STAGE, fault],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
        start_new_session=True,  # the worker stops its process group: the stage's, not the test's
    )
    try:
        _, status = os.waitpid(stage.pid, os.WUNTRACED)  # the worker stopped it mid-parse
        assert os.WIFSTOPPED(status)
        time.sleep(2)  # the stop itself, twice parse_timeout
        os.killpg(stage.pid, signal.SIGCONT)
        output, _ = stage.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stage.pid, signal.SIGKILL)
        stage.wait()
    assert output == "None\n"


def test_the_signals_an_operator_sends_the_process_group_leave_the_worker_parsing(parser: IsolatedParser) -> None:
    """Ctrl-C, systemd's stop, a closed terminal: each reaches the worker too, and ended it mid-parse (Failed)."""
    assert parser.run(job(simple_message())).failure is None
    worker = parser.worker
    assert worker is not None
    for operators_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(worker.pid, operators_signal)
    assert parser.run(job(simple_message())).failure is None
    assert parser.worker is worker
    assert worker.poll() is None


@pytest.mark.usefixtures("faults")
def test_a_worker_an_operator_s_signal_ends_mid_parse_leaves_the_job_to_the_next(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parser: IsolatedParser
) -> None:
    """A signal that reaches the worker before it ignores it (while it starts) is not the message's doing."""
    monkeypatch.setenv("INBOUND_TEST_ONCE_MARK", str(tmp_path / "interrupted"))
    outcome = parser.run(job(simple_message(extra="X-Test-Fault: interrupted\r\n")))
    assert (tmp_path / "interrupted").exists()  # the first worker was ended by SIGINT
    assert outcome.failure is None


def test_a_caller_leaving_early_never_gets_the_answer_to_the_job_sent_ahead(parser: IsolatedParser) -> None:
    outcomes = parser.run_all(
        ParseJob(simple_message(subject=s), ENVELOPE, job(b"").renders, job(b"").limits) for s in "ab"
    )
    assert next(outcomes).subject == "a"
    outcomes.close()  # "b" was sent ahead; its answer must not be taken for the next job's
    assert parser.run(job(simple_message(subject="c"))).subject == "c"


def test_the_worker_measures_the_peak_memory_of_big_messages_only(parser: IsolatedParser) -> None:
    """Resetting and reading the peak cost 40-60 us a message; only a big message's is logged."""
    small, big = parser.run(job(simple_message())), parser.run(job(attachment_message(PEAK_MEASURED_FROM, "big")))
    assert small.peak_rss == 0
    assert big.peak_rss > PEAK_MEASURED_FROM  # the message itself is in it, base64 and decoded


def test_processing_limits_and_their_defaults(tmp_path: Path) -> None:
    default = processing(tmp_path, "")
    assert default.memory_limit(25 * MIB) == 3 * 25 * MIB + 256 * MIB
    assert (default.parse_timeout, default.max_mime_depth, default.max_mime_parts) == (30.0, 100, 10_000)
    fixed = processing(tmp_path, 'parse_memory_limit = "1GiB"\nparse_timeout = "2m"\nmax_mime_depth = 20')
    assert (fixed.memory_limit(25 * MIB), fixed.parse_timeout, fixed.max_mime_depth) == (1024 * MIB, 120.0, 20)
    assert processing(tmp_path, 'parse_memory_limit = "5x+100MiB"').memory_limit(MIB) == 105 * MIB
    assert default.pin_pipeline
    assert not processing(tmp_path, "pin_pipeline = false").pin_pipeline
    niceness = [
        processing(tmp_path, body).parse_worker_nice for body in ("", "parse_worker_nice = 0", "parse_worker_nice = 19")
    ]
    assert niceness == [0, 0, 19]
    graces = [processing(tmp_path, f"unknown_stream_grace = {v}").unknown_stream_grace for v in ('"0s"', '"1h"')]
    assert (default.unknown_stream_grace, graces) == (300.0, [0.0, 3600.0])


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ('parse_memory_limit = "lots"', "processing.parse_memory_limit", 'must be "<N>x + <size>"'),
        ('parse_memory_limit = "3x + 10MiB"', "processing.parse_memory_limit", "at least 64MiB"),
        ("parse_memory_limit = 300", "processing.parse_memory_limit", "must be str"),
        ('parse_timeout = "0s"', "processing.parse_timeout", "longer than 0s"),
        ('parse_timeout = "soon"', "processing.parse_timeout", "is not a duration"),
        ("max_mime_depth = 0", "processing.max_mime_depth", "between 1 and"),
        ('max_mime_parts = "many"', "processing.max_mime_parts", "must be int"),
        ("workers = 4", "processing.workers", "unknown key"),
        ('pin_pipeline = "yes"', "processing.pin_pipeline", "must be bool"),
        ("parse_worker_nice = 20", "processing.parse_worker_nice", "between 0 and 19"),
        ("parse_worker_nice = -5", "processing.parse_worker_nice", "between 0 and 19"),
        ("parse_worker_nice = true", "processing.parse_worker_nice", "must be int"),
        ('unknown_stream_grace = "2h"', "processing.unknown_stream_grace", "at most 1h"),
        ('unknown_stream_grace = "later"', "processing.unknown_stream_grace", "is not a duration"),
    ],
)
def test_processing_errors_name_file_and_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        processing(tmp_path, body)
    assert str(tmp_path / "inbound.toml") in str(error.value)
    assert key in str(error.value)
    assert problem in str(error.value)


def test_the_address_space_the_worker_limits_from_is_the_kernel_s_vmsize() -> None:
    before = address_space()
    grown = bytearray(64 * MIB)  # a mapping of its own: the size moves by at least that much
    after = address_space()
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    assert after - before >= len(grown)
    assert abs(after - vm_size) <= 4 * MIB  # the same figure, give or take an allocation in between
