"""``inbound serve``'s default process model: a supervisor with an edge and a pipeline process.

Real processes, real signals: a child killed with SIGKILL is started again, with
the settings the service runs with, and the mail keeps flowing; the supervisor killed with SIGKILL takes its children
with it; HUP ends nothing; a child that cannot start stops ``serve`` with an
error instead of a restart loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil
import pytest

from inbound import snapshot
from inbound.config import Settings
from inbound.cpus import placement

from .harness import (
    InboundProcess,
    WebhookReceiver,
    run_cli,
    send,
    simple_message,
    smtp_port_of,
    statuses,
    stream_toml,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def config(tmp_path: Path, receiver: WebhookReceiver) -> Path:
    path = write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], receiver.url("/hook")))
    run_cli("init", config=path)
    return path


def children(service: InboundProcess) -> dict[str, psutil.Process]:
    """The supervisor's children by role group ("edge", "pipeline")."""
    assert service.proc is not None
    found = {}
    for child in psutil.Process(service.proc.pid).children():
        try:
            command = child.cmdline()
        except psutil.Error:  # a child just killed, not yet reaped by the supervisor
            continue
        if "inbound.serving" not in command:  # a child forked a moment ago, before it runs Python
            continue
        roles = command[command.index("inbound.serving") + 2]  # after the settings (inbound/serving.py)
        found["edge" if "smtp" in roles else "pipeline"] = child
    return found


def delivered(config: Path, queue_id: str) -> bool:
    return statuses(config).get(f"{queue_id}-support") == "delivered"


def of_threads(process: psutil.Process, read: Callable[[psutil.Process], Iterable[int]]) -> set[int]:
    """What *read* finds in any thread of *process*: on Linux a thread has its own CPUs and nice value."""
    found: set[int] = set()
    for thread in process.threads():
        with contextlib.suppress(psutil.NoSuchProcess):  # a thread that ended meanwhile
            found.update(read(psutil.Process(thread.id)))
    return found


def cpus_of(process: psutil.Process) -> set[int]:
    """The CPUs any thread of *process* may run on (a thread may differ from the process's first)."""
    return of_threads(process, psutil.Process.cpu_affinity)


def nice_of(process: psutil.Process) -> set[int]:
    """The nice values of *process*'s threads."""
    return of_threads(process, lambda thread: [thread.nice()])


def test_serve_runs_the_edge_and_the_pipeline_apart(config: Path, receiver: WebhookReceiver) -> None:
    service = InboundProcess(config).start()
    try:
        procs = wait_for(lambda: len(children(service)) == 2 and children(service), 30, "two children")
        assert procs["edge"].pid != procs["pipeline"].pid
        assert service.proc is not None  # serve became the supervisor, its pid kept (inbound/supervisor.py)
        assert psutil.Process(service.proc.pid).cmdline()[1:3] == ["-m", "inbound.supervisor"]
        assert " INFO inbound.supervisor inbound started: edge pid " in service.log()  # its logger keeps its name
        queue_id = send(config, "alice@sender.test", ["help@in.test"], simple_message())
        wait_for(lambda: delivered(config, queue_id), 60, "the message to be delivered")
        assert len(receiver.on("/hook")) == 1
        # Each on its own CPUs (inbound/cpus.py), every thread included; the parse worker anywhere.
        everywhere = set(os.sched_getaffinity(0))
        expected = placement(everywhere)
        assert cpus_of(procs["pipeline"]) == expected.get("pipeline", everywhere)
        assert cpus_of(procs["edge"]) == expected.get("edge", everywhere)
        [parse_worker] = procs["pipeline"].children()
        assert cpus_of(parse_worker) == everywhere
        # Every process at serve's priority, every thread included (processing.parse_worker_nice = 0).
        assert nice_of(procs["edge"]) == nice_of(procs["pipeline"]) == nice_of(parse_worker) == {os.nice(0)}
    finally:
        service.stop()


def test_with_pin_pipeline_off_every_process_runs_anywhere_and_parse_worker_nice_lowers_the_parse_worker(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    path = write_config(
        tmp_path,
        streams=stream_toml("support", ["*@in.test"], receiver.url("/hook")),
        extra="[processing]\npin_pipeline = false\nparse_worker_nice = 10\n",
    )
    run_cli("init", config=path)
    service = InboundProcess(path).start()
    try:
        procs = wait_for(lambda: len(children(service)) == 2 and children(service), 30, "two children")
        everywhere = set(os.sched_getaffinity(0))
        assert cpus_of(procs["pipeline"]) == cpus_of(procs["edge"]) == everywhere
        # The parse worker lowers itself first thing: a message parsed shows it has.
        queue_id = send(path, "alice@sender.test", ["help@in.test"], simple_message())
        wait_for(lambda: delivered(path, queue_id), 60, "the message to be delivered")
        [parse_worker] = procs["pipeline"].children()
        ours = os.nice(0)
        assert nice_of(procs["pipeline"]) == nice_of(procs["edge"]) == {ours}
        assert nice_of(parse_worker) == {min(ours + 10, 19)}
    finally:
        service.stop()


def test_a_killed_child_is_started_again_and_mail_goes_on(config: Path, receiver: WebhookReceiver) -> None:
    service = InboundProcess(config).start()
    try:
        first = wait_for(lambda: children(service).get("pipeline"), 30, "the pipeline process")
        first.kill()
        queue_id = send(config, "alice@sender.test", ["help@in.test"], simple_message("while down"))
        again = wait_for(lambda: (c := children(service).get("pipeline")) and c.pid != first.pid and c, 30, "restart")
        assert again.is_running()
        wait_for(lambda: delivered(config, queue_id), 60, "the message accepted meanwhile to be delivered")
        assert "pipeline (process,deliver,record) exited with status -9; starting it again" in service.log()
    finally:
        service.stop()


def move_the_data_directory(config: Path) -> None:
    """An edit that takes a restart, made ready for the next one: a new data directory, initialised."""
    config.write_text(config.read_text().replace('data_dir = "data"', 'data_dir = "data2"'))
    run_cli("init", config=config)


def break_the_file(config: Path) -> None:
    config.write_text(config.read_text() + "\n= no key\n")


@pytest.mark.parametrize("edit", [move_the_data_directory, break_the_file])
def test_a_child_started_again_runs_with_the_settings_in_use_not_the_file_edited_since(
    config: Path, receiver: WebhookReceiver, edit: Callable[[Path], None]
) -> None:
    in_use = config.with_name("in-use.toml")  # the file as the service read it, for this test's own reading
    shutil.copy(config, in_use)
    service = InboundProcess(config).start()
    try:
        first = wait_for(lambda: children(service).get("pipeline"), 30, "the pipeline process")
        edit(config)
        first.kill()
        wait_for(lambda: "pipeline started again" in service.log(), 30, "the pipeline to start again")
        # Accepted by the edge, which runs with the settings in use: the pipeline must find it there.
        queue_id = send(in_use, "alice@sender.test", ["help@in.test"], simple_message("after the restart"))
        wait_for(lambda: delivered(in_use, queue_id), 60, "the message to be delivered")
        assert len(receiver.by_queue_id()[queue_id]) == 1
    finally:
        service.stop()


def test_a_child_started_again_after_a_reload_runs_with_the_streams_reloaded(
    config: Path, receiver: WebhookReceiver
) -> None:
    in_use = config.with_name("in-use.toml")
    shutil.copy(config, in_use)
    service = InboundProcess(config).start()
    try:
        first = wait_for(lambda: children(service).get("pipeline"), 30, "the pipeline process")
        config.write_text(config.read_text().replace(receiver.url("/hook"), receiver.url("/reloaded")))
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "/reloaded" in settings_of(first).streams[0].webhook_url, 30, "the reload to be kept")
        break_the_file(config)
        first.kill()
        wait_for(lambda: "pipeline started again" in service.log(), 30, "the pipeline to start again")
        queue_id = send(in_use, "alice@sender.test", ["help@in.test"], simple_message("after the restart"))
        wait_for(lambda: delivered(in_use, queue_id), 60, "the message to be delivered")
        assert len(receiver.by_queue_id("/reloaded")[queue_id]) == 1
    finally:
        service.stop()


def settings_of(child: psutil.Process) -> Settings:
    """The settings the supervisor hands to the children it starts (inbound/snapshot.py)."""
    command = child.cmdline()
    fd = os.open(f"/proc/{child.pid}/fd/{command[command.index('inbound.serving') + 1]}", os.O_RDONLY)
    try:
        return snapshot.read(fd)
    finally:
        os.close(fd)


def test_hup_ends_nothing_and_term_stops_everything_cleanly(config: Path) -> None:
    service = InboundProcess(config).start()
    try:
        procs = wait_for(lambda: len(children(service)) == 2 and children(service), 30, "two children")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service.log().count("SIGHUP") == 2, 30, "both children to take the HUP")
        assert all(p.is_running() for p in procs.values())
        assert service.terminate() == 0
        assert not any(p.is_running() for p in procs.values())
    finally:
        service.stop()


def test_killing_the_supervisor_takes_its_children(config: Path) -> None:
    service = InboundProcess(config).start()
    try:
        procs = wait_for(lambda: len(children(service)) == 2 and children(service), 30, "two children")
        service.kill()
        for process in procs.values():
            process.wait(30)  # raises psutil.TimeoutExpired if it outlives its parent
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", smtp_port_of(config))) != 0
    finally:
        service.stop()


def test_a_child_that_cannot_start_stops_serve_with_its_error(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", smtp_port_of(config)))
        taken.listen()
        result = subprocess.run(
            InboundProcess(config).command(), capture_output=True, text=True, timeout=120, check=False
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    assert "edge (smtp,publish) failed to start" in result.stderr
    assert "starting it again" not in result.stderr


def test_every_file_the_service_writes_is_its_owner_s_only(config: Path, receiver: WebhookReceiver) -> None:
    service = InboundProcess(config).start()
    try:
        queue_id = send(config, "alice@sender.test", ["help@in.test"], simple_message())
        wait_for(lambda: delivered(config, queue_id), 60, "the message to be delivered")
    finally:
        service.stop()
    data = config.parent / "data"
    shared = {str(p): oct(p.stat().st_mode & 0o777) for p in [data, *data.rglob("*")] if p.stat().st_mode & 0o077}
    assert shared == {}
    assert len(list(data.rglob("*.db"))) >= 3  # the bus, the outbox and the activity store were among them
