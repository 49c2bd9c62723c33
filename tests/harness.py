"""Real parts for the end-to-end tests: a webhook receiver, a config writer, and
``inbound serve`` as a real process that can be killed with SIGKILL.

Nothing here sleeps to synchronise: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from inbound.bus import Headers
from inbound.config import load_settings
from inbound.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"test-secret-of-32-bytes-length!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()  # a rotated key
INBOUND = [sys.executable, "-m", "inbound"]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll *condition* until it returns something truthy; fail with *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def pristine_copy(module: ModuleType) -> ModuleType:
    """A fresh copy of *module*, loaded from its file: what it was before anything patched it."""
    spec = importlib.util.spec_from_file_location(f"pristine_{module.__name__}", module.__file__)
    assert spec is not None
    assert spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def holds_in_a_fresh_interpreter(code: str) -> None:
    """Run *code* (asserts) in a new Python: what an import does there, not what this process imported before."""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @functools.cached_property
    def json(self) -> Any:
        # Parsed once: waits poll by_queue_id over every hit, and a bench makes 20,000 of them.
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server recording every POST; answers per path with a programmable status."""

    hits: list[Hit] = field(default_factory=list)
    hits_by_path: dict[str, list[Hit]] = field(default_factory=dict)  # so a hit costs the same as the first
    # path -> function of (number of hits on that path so far) -> status, or ("sleep", seconds)
    behaviour: dict[str, Callable[[int], int]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # cut short by a sender killed mid-POST: never answered, so not a delivery
                with receiver.lock:
                    on_path = receiver.hits_by_path.setdefault(self.path, [])
                    seen = len(on_path)
                    hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    receiver.hits.append(hit)
                    on_path.append(hit)
                    status = receiver.behaviour.get(self.path, lambda n: 200)(seen)
                    delay = receiver.delay.get(self.path, 0.0)
                    now = receiver.in_flight[self.path] = receiver.in_flight.get(self.path, 0) + 1
                    receiver.peak_in_flight[self.path] = max(now, receiver.peak_in_flight.get(self.path, 0))
                if delay:
                    time.sleep(delay)  # a slow endpoint, on purpose
                with receiver.lock:
                    receiver.in_flight[self.path] -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def on(self, path: str) -> list[Hit]:
        with self.lock:
            return list(self.hits_by_path.get(path, ()))

    def by_queue_id(self, path: str = "/hook") -> dict[str, list[Hit]]:
        result: dict[str, list[Hit]] = {}
        for hit in self.on(path):
            result.setdefault(hit.json["queue_id"], []).append(hit)
        return result


def stream_toml(name: str, addresses: list[str], url: str, block: Sequence[str] = ()) -> str:
    return f"""
[[streams]]
name = "{name}"
addresses = {json.dumps(addresses)}
webhook_url = "{url}"
signing_secret = "{SECRET}"
block_senders = {json.dumps(list(block))}
"""


def config_problems(path: Path) -> str:
    """The ConfigError that loading *path* must raise, as the operator reads it (one problem a line)."""
    try:
        load_settings(path, {})
    except ConfigError as error:
        return str(error)
    raise AssertionError(f"{path} loaded without a configuration error")


def write_config(
    directory: Path,
    *,
    streams: str,
    bus: str = 'backend = "embedded"',
    smtp_port: int | None = None,
    max_message_size: int = 1024 * 1024,
    max_header_size: int = 1024 * 1024,
    retry_schedule: Sequence[str] = ("1s", "1s"),
    timeout: str = "5s",
    data_dir: str = "data",
    extra: str = "",
) -> Path:
    port = smtp_port or free_port()
    path = directory / "inbound.toml"
    path.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "mx.test.example"
max_message_size = {max_message_size}
max_header_size = {max_header_size}

[storage]
data_dir = "{data_dir}"

[bus]
{bus}

[webhooks]
allow_private = true
retry_schedule = {json.dumps(list(retry_schedule))}
timeout = "{timeout}"
{extra}
{streams}
"""
    )
    return path


def smtp_port_of(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["smtp"]["listen"].rpartition(":")[2])


def run_cli(*args: str, config: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*INBOUND, *args, "--config", str(config)], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"inbound {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


class InboundProcess:
    """``inbound serve`` as a real child process."""

    def __init__(
        self,
        config: Path,
        roles: str | None = None,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.roles = roles
        self.env = env  # added to this process's environment
        self.python = python  # benches: a runtime-only install, without the test dependencies
        self.log_path = log or config.parent / f"serve-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        args = [self.python, "-m", "inbound", "serve", "--config", str(self.config)]
        return [*args, "--roles", self.roles] if self.roles else args

    def start(self, wait_smtp: bool = True) -> InboundProcess:
        self.log_file = self.log_path.open("ab")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.command(), stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        if wait_smtp and (self.roles is None or "smtp" in self.roles):
            wait_for(self._smtp_ready, 60, f"SMTP on {self.config} (log: {self.log_path})")
        # A supervisor says so once every child has started; a single process once it serves.
        started = b"inbound started: edge" if self.roles is None else b"inbound started"
        wait_for(lambda: started in self.log_path.read_bytes() or self._exited(), 60, f"start (log: {self.log_path})")
        return self

    def _exited(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"inbound serve exited {self.proc.returncode}: {self.log()[-3000:]}")
        return False

    def _smtp_ready(self) -> bool:
        self._exited()
        try:
            with smtplib.SMTP("127.0.0.1", smtp_port_of(self.config), timeout=5) as s:
                return s.noop()[0] == 250
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def seen_by_every_process(self, text: str) -> bool:
        """Whether every process of this service logged *text*: the supervisor's two children, or the one."""
        return self.log().count(text) >= (1 if self.roles else 2)

    def reads_pauses(self) -> bool:
        """Whether a process of this service reads the pauses: those running the stages a pause holds
        (process, deliver); the edge accepts paused or not, so it needs no bus to start."""
        return self.roles is None or bool({"process", "deliver"} & set(self.roles.split(",")))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 90) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(60)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "log_file"):
            self.log_file.close()


def send_on(smtp: smtplib.SMTP, mail_from: str, rcpts: list[str], message: bytes) -> str:
    """Send one message on an open connection; return the queue id from the 250 reply."""
    code, reply = smtp.mail(mail_from)
    assert code == 250, (code, reply)
    for rcpt in rcpts:
        code, reply = smtp.rcpt(rcpt)
        assert code == 250, (rcpt, code, reply)
    code, reply = smtp.data(message)
    assert code == 250, (code, reply)
    return reply.decode().rsplit(" ", 1)[-1]


def send(config: Path, mail_from: str, rcpts: list[str], message: bytes) -> str:
    """Send one message on a new connection; return the queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=30) as smtp:
        smtp.ehlo("client.test")
        return send_on(smtp, mail_from, rcpts, message)


def simple_message(
    subject: str = "Hello",
    sender: str = "alice@sender.test",
    to: str = "help@in.test",
    body: str = "Hi there",
    extra: str = "",  # more header lines, each ending in CRLF
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@sender.test>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n{extra}\r\n"
        f"{body}\r\n"
    ).encode()


def attachment_message(size: int, subject: str) -> bytes:
    """A message with one attachment of *size* random bytes, base64-encoded (about 4/3 of *size*)."""
    content = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (
        (
            f"From: a@sender.test\r\nTo: help@in.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
            '--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + content
        + b"--b--\r\n"
    )


def activity(config: Path) -> list[dict[str, Any]]:
    out = run_cli("activity", "list", "--json", "--limit", "100000", config=config).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def statuses(config: Path) -> dict[str, str]:
    return {r["delivery_id"]: r["status"] for r in activity(config)}


class RecordingProducer:
    """A bus producer that keeps what it is sent as (topic, value): for driving a stage in process."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        self.sent.append((topic, value))

    def flush(self) -> None:
        pass
