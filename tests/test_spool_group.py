"""Group commit at the edge: concurrent DATA completions share fsyncs, and each 250 waits for its own.

A real ``InboundSMTP`` on a loopback port with a real spool (edge_harness.py);
the spool's fsyncs are counted, and the first one is held until the test lets
it go, so that more messages end their DATA while it is under way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from inbound.datadir import DataDir
from inbound.edge import limits
from inbound.edge import spool as spool_module
from inbound.edge.spool import SpoolWriter
from inbound.errors import SpoolError

from .edge_harness import Client, EdgeServers, spool_envelope
from .harness import wait_for
from .test_edge_input import _send_data, lines

LATER = 4  # messages that end their DATA while the first one's fsync is held


class HeldFsyncs:
    """The spool's fsyncs, counted; the first file fsync waits for :attr:`release`; one may be made to fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.fail_after: int | None = None  # file fsyncs that succeed before the next one fails
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            self.calls.append("file")
            if len(self.calls) == 1:
                self.release.wait(30)
            if self.fail_after is not None and self.calls.count("file") > self.fail_after:
                raise OSError(errno.EIO, "injected")
            real_fsync(fd)

        def fsync_dir(path: Path) -> None:
            self.calls.append("dir")
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # as the real one, without counting its fsync twice
            try:
                real_fsync(fd)
            finally:
                os.close(fd)

        monkeypatch.setattr(spool_module.os, "fsync", fsync)
        monkeypatch.setattr(spool_module, "fsync_dir", fsync_dir)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldFsyncs:
    return HeldFsyncs(monkeypatch)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(LATER + 1) as executor:
        yield executor


def send_while_held(
    make_server: EdgeServers,
    held: HeldFsyncs,
    pool: ThreadPoolExecutor,
    meanwhile: Callable[[SpoolWriter, list[Client]], None] = lambda writer, clients: None,
) -> tuple[Path, list[Future[bytes]]]:
    """One message into the held fsync, LATER more waiting behind it in the order of their clients; none
    answered yet. Then *meanwhile*, and the release."""
    settings, spool = make_server()
    writer = make_server.handlers[-1].spool_writer
    clients = [Client(settings) for _ in range(LATER + 1)]

    def send(i: int) -> bytes:
        return _send_data(clients[i], f"Subject: {i}\r\n\r\nbody\r\n".encode())

    replies = [pool.submit(send, 0)]
    wait_for(lambda: held.calls == ["file"], 10, "the first message's fsync")
    for i in range(1, LATER + 1):
        replies.append(pool.submit(send, i))
        wait_for(lambda n=i: len(writer.waiting) == n, 10, f"message {i} to wait for the next write")
    assert not any(reply.done() for reply in replies)  # no 250 before the bytes are durable
    assert list(spool.new.iterdir()) == []
    meanwhile(writer, clients)
    held.release.set()
    for reply in replies:
        reply.result(10)
    for client in clients:
        client.close()
    return spool.new, replies


def test_messages_ending_together_share_one_fsync_of_file_and_directory(
    make_server: EdgeServers, held: HeldFsyncs, pool: ThreadPoolExecutor
) -> None:
    new, replies = send_while_held(make_server, held, pool)
    assert all(reply.result().startswith(b"250 2.0.0 Ok: queued as") for reply in replies)
    assert held.calls == ["file", "dir", "file", "dir"]  # 5 messages, 2 writes: 4 fsyncs, not 10
    files = sorted(new.iterdir())
    assert len(files) == 2
    entries = [spool_module.decode_entries(path, path.read_bytes()) for path in files]
    assert [len(group) for group in entries] == [1, LATER]
    assert sorted(entry.message.rpartition(b"Subject: ")[2][:1] for group in entries for entry in group) == [
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
    ]


def test_a_failed_group_write_answers_451_to_each_of_its_messages_and_keeps_nothing(
    make_server: EdgeServers, held: HeldFsyncs, pool: ThreadPoolExecutor
) -> None:
    held.fail_after = 1
    new, replies = send_while_held(make_server, held, pool)
    answers = [reply.result()[:9] for reply in replies]
    assert answers == [b"250 2.0.0"] + [b"451 4.3.0"] * LATER
    (kept,) = new.iterdir()
    assert len(spool_module.decode_entries(kept, kept.read_bytes())) == 1
    assert list((new.parent / "tmp").iterdir()) == []


class FailingDirectoryFsync:
    """The spool's fsync_dir, recorded; the first one fails, as a failing disk's would (EIO)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Path] = []
        monkeypatch.setattr(spool_module, "fsync_dir", self)

    def __call__(self, path: Path) -> None:
        self.calls.append(path)
        if len(self.calls) == 1:
            raise OSError(errno.EIO, "injected")


def test_an_entry_whose_directory_fsync_fails_is_refused_and_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry was renamed into new/ when the fsync of new/ failed: its sender got a 451 while the
    entry stayed there and was published, so the sender's retry made a second, delivered copy."""
    spool = spool_module.Spool(DataDir(tmp_path))
    fsyncs = FailingDirectoryFsync(monkeypatch)
    with pytest.raises(SpoolError, match="injected"):
        spool.put(spool_envelope(), b"Subject: once\r\n\r\nhi\r\n")
    assert spool.pending() == []  # nothing left for the publisher
    assert fsyncs.calls == [spool.new, spool.new]  # the second makes the removal durable


def test_an_entry_that_cannot_be_taken_back_is_refused_all_the_same_and_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 250 for an entry whose directory may not survive a power cut could lose it; the 451 may
    only make a second copy."""
    spool = spool_module.Spool(DataDir(tmp_path))
    FailingDirectoryFsync(monkeypatch)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.parent == spool.new:
            raise OSError(errno.EIO, "injected")
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    envelope = spool_envelope()
    with pytest.raises(SpoolError, match="injected"):
        spool.put(envelope, b"Subject: once\r\n\r\nhi\r\n")
    assert [entry.envelope.queue_id for entry in spool.entries()] == [envelope.queue_id]
    assert f"queue_id={envelope.queue_id} stage=receive refused, but its spool entry may still be published" in (
        caplog.text
    )


def test_a_group_write_is_bounded_in_bytes_and_a_larger_message_goes_alone(tmp_path: Path) -> None:
    spool = spool_module.Spool(DataDir(tmp_path))
    writer = spool_module.SpoolWriter(spool)
    writer.GROUP_BYTES = 25
    sizes = [10, 10, 10, 40, 10]

    async def put_all() -> None:
        envelopes = [spool_envelope() for _ in sizes]
        await asyncio.gather(*(writer.put(e, b"x" * size) for e, size in zip(envelopes, sizes, strict=True)))

    asyncio.run(put_all())
    groups = sorted([len(entry.message) for entry in spool.read(path)] for path in spool.pending())
    assert groups == [[10], [10], [10, 10], [40]]  # 10+10, then 10 (10+40 is over), 40 alone, 10


def test_a_file_of_several_messages_counts_as_several_and_a_damaged_one_as_what_it_shows(tmp_path: Path) -> None:
    spool = spool_module.Spool(DataDir(tmp_path))
    envelopes = [spool_envelope() for _ in range(3)]
    path = spool.put_many([(e, b"line\n" * n) for n, e in enumerate(envelopes)])
    assert spool_module.count_entries(path) == 3
    path.write_bytes(path.read_bytes()[:-20])  # the last entry's closing header cut short: still three openings
    assert spool_module.count_entries(path) == 3
    path.write_bytes(b"not a spool file")
    assert spool_module.count_entries(path) == 1  # a file waiting is at least a message waiting


def test_a_client_gone_before_its_250_holds_up_nobody_in_its_group(
    make_server: EdgeServers, held: HeldFsyncs, pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=spool_module.__name__)
    left: list[str] = []

    def first_of_the_next_group_leaves(writer: SpoolWriter, clients: list[Client]) -> None:
        envelope, _, leaving, _ = writer.waiting[0]  # client 1's
        left.append(envelope.queue_id)
        clients[1].sock.shutdown(socket.SHUT_WR)  # ends its session: aiosmtpd cancels it, waiting or not
        wait_for(leaving.cancelled, 10, "the session of the client that left to end")

    new, replies = send_while_held(make_server, held, pool, first_of_the_next_group_leaves)
    answers = [reply.result()[:9] for reply in replies]
    assert answers == [b"250 2.0.0", b""] + [b"250 2.0.0"] * (LATER - 1)
    # Its message was written with the others: in doubt for its sender, as any lost 250 is, never lost.
    assert sum(spool_module.count_entries(path) for path in new.iterdir()) == LATER + 1
    assert f"queue_id={left[0]} stage=receive spooled, but its client left before the 250" in caplog.text


def test_a_message_handed_to_the_spool_gets_its_reply_however_long_the_write_takes(
    make_server: EdgeServers, held: HeldFsyncs
) -> None:
    """data_timeout went on counting while the spool wrote: a slow disk made it a 421 for a message the
    write then kept, and its sender, told to try again, would send it twice."""
    settings, spool = make_server(data_timeout=0.5)
    client = Client(settings)
    client.begin_data()
    client.sock.sendall(b"Subject: on time\r\n\r\nthe whole DATA at once\r\n.\r\n")
    wait_for(lambda: held.calls == ["file"], 10, "the message's write")
    # Nothing may come while the write is held, for several times data_timeout: its end is the test.
    readable, _, _ = select.select([client.sock], [], [], 4 * settings.data_timeout)
    assert readable == []
    held.release.set()
    assert client.reply().startswith(b"250 2.0.0 Ok: queued as")
    assert len(list(spool.entries())) == 1
    client.close()


def test_a_message_whose_client_left_before_its_250_is_counted_until_its_write_is_answered(
    make_server: EdgeServers, held: HeldFsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its session ended at once and gave its share of smtp.max_data_in_memory back, while the message
    waited for the spool: clients that hung up after their final dot grew the writer's queue past the cap."""
    monkeypatch.setattr(limits, "UNCOUNTED", 0)
    settings, spool = make_server(max_message_size=900_000, max_data_in_memory=1_000_000)
    handler = make_server.handlers[-1]
    message = b"Subject: left\r\n\r\n" + lines(400)
    leaving, other = Client(settings, source="127.0.0.2"), Client(settings, source="127.0.0.3")
    leaving.begin_data()
    leaving.sock.sendall(message + b".\r\n")
    wait_for(lambda: held.calls == ["file"], 10, "its write")
    leaving.close()
    wait_for(lambda: handler.in_flight == 0, 10, "its session to end")
    assert handler.data_budget.held == len(message)  # the spool writer still holds it
    assert _send_data(other, b"Subject: more\r\n\r\n" + lines(700)).startswith(b"452 4.3.1")
    held.release.set()
    wait_for(lambda: handler.data_budget.held == 0, 10, "its share given back once written")
    assert [entry.message.endswith(message) for entry in spool.entries()] == [True]
    other.close()
