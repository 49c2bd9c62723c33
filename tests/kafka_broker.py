"""A real single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

No Docker and no Apache download site: the broker's classpath comes from Maven
Central through ``tools/kafka/pom.xml`` (fetched once into ``.cache/kafka/lib``),
and the broker runs on the JDK as a child process in a fresh temporary directory.

Used by the ``kafka_broker`` test fixture and by ``make kafka``
(``python tests/kafka_broker.py``: prints the bootstrap address, runs until
Ctrl-C or SIGTERM). Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]
POM = REPO / "tools" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO / "tools" / "kafka" / "log4j2.properties"
DEFAULT_CACHE = REPO / ".cache" / "kafka"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

#: Largest record the broker takes (64 MiB) plus headroom for the batch and request framing.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 1024 * 1024
MAX_REQUEST_BYTES = 128 * 1024 * 1024

STARTED_LINE = "Kafka Server started"
_POLL = 0.1  # how often start() looks at the log and the process while waiting


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


def fetch_jars(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Download the broker's classpath into ``cache_dir/lib`` (once) and return that directory.

    A stamp file records the digest of the pom the directory was fetched for, so an
    interrupted fetch or a changed pom fetches again. Concurrent callers serialise on
    a lock file; the new directory is filled aside and renamed into place.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / "lib"
    stamp = cache_dir / "lib.stamp"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    with open(cache_dir / "fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn is not installed (`make java` installs a JDK and Maven)")
        partial = cache_dir / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            DEPENDENCY_PLUGIN,
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            tail = (done.stdout + done.stderr)[-4000:]
            raise BrokerError(f"fetching the Kafka jars failed (exit {done.returncode}):\n{tail}")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        stamp.write_text(digest + "\n")
        return lib


def free_ports(count: int) -> list[int]:
    """*count* distinct ephemeral ports on 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL the broker if the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class KafkaBroker:
    """One broker+controller node in a fresh directory; a context manager.

    ``restart()`` keeps the ports and the data directory (records, offsets and topics
    survive), which is what broker-outage tests need: ``stop()``, keep working,
    ``restart()``.
    """

    def __init__(
        self,
        lib: Path | None = None,
        *,
        heap: str = "512m",
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        workdir: Path | None = None,
    ) -> None:
        self.lib = lib
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port, self.controller_port = free_ports(2)
        self.bootstrap = f"127.0.0.1:{self.port}"
        # The 22-character base64url form Kafka uses; one that starts with "-" would be read by
        # the storage tool's argument parser as an option, so draw again.
        self.cluster_id = "-"
        while self.cluster_id.startswith("-"):
            self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._own_dir = workdir is None
        self.dir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="inbound-kafka-"))
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "server.properties"
        self.log_path = self.dir / "broker.log"
        self.started_in: float | None = None  # seconds the last start() took
        self._proc: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the broker and return once it serves clients; BrokerError (with the log tail) if not."""
        with self._lock:
            if self.running:
                return
            began = time.monotonic()
            if self.lib is None:
                self.lib = fetch_jars()
            if not self._formatted:
                self._format()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        *self._java(),
                        f"-Xms{self.heap}",
                        f"-Xmx{self.heap}",
                        "-XX:+ExitOnOutOfMemoryError",
                        "kafka.Kafka",
                        str(self.config_path),
                    ],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; stop() shuts the broker down
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 -- only prctl, before exec
                )
            self._wait_started(offset, began + self.start_timeout)
            self.started_in = time.monotonic() - began

    def stop(self) -> None:
        """Controlled shutdown: SIGTERM, then SIGKILL if it has not exited after ``stop_timeout``."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.poll() is not None:
                return
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Crash the broker (SIGKILL): no controlled shutdown, log recovery on the next start."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.poll() is not None:
                return
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop if running, then start again on the same ports with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its directory (if this object created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> KafkaBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- internals ----------------------------------------------------------

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not installed (`make java` installs a JDK and Maven)")
        return [
            java,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            f"{self.lib}/*",  # one argument: the JVM expands the wildcard itself
        ]

    def _format(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._properties())
        done = subprocess.run(
            [*self._java(), "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(self.config_path)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
            check=False,
        )
        if done.returncode != 0:
            raise BrokerError(
                f"formatting {self.data_dir} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )
        self._formatted = True

    def _properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # Topics are created by KafkaBus.ensure_topics with their own settings (size limit);
            # an auto-created topic would silently lack them.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After kill(), the restarted broker cannot register until the controller expires the
            # old incarnation's session (default 9 s); heartbeat faster so restart() is quick.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            # The default 128 MiB dedupe buffer does not fit a small heap.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # Mail up to 20+ MB travels base64'd inside JSON: allow records up to 64 MiB.
            "message.max.bytes": str(MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
            "socket.request.max.bytes": str(MAX_REQUEST_BYTES),
            "fetch.max.bytes": str(MAX_REQUEST_BYTES),
            # Two cores: fewer threads than the defaults (3 network, 8 I/O).
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _wait_started(self, offset: int, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            if _log_contains(self.log_path, offset, STARTED_LINE):
                return
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(f"the Kafka broker exited with {code} while starting:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                self._proc = None
                raise BrokerError(
                    f"the Kafka broker did not start within {self.start_timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(_POLL)


def _log_contains(path: Path, offset: int, needle: str) -> bool:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return needle.encode() in log.read()
    except OSError:
        return False


def main() -> int:
    """``make kafka``: fetch the jars, start a broker, print its address, run until Ctrl-C/SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    began = time.monotonic()
    try:
        lib = fetch_jars()
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"kafka jars: {lib} ({time.monotonic() - began:.1f}s)", flush=True)
    broker = KafkaBroker(lib)
    try:
        broker.start()
        print(f"kafka broker started in {broker.started_in:.1f}s; log: {broker.log_path}", flush=True)
        print(f'bootstrap_servers = ["{broker.bootstrap}"]', flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print(f"the broker exited:\n{broker.log_tail()}", file=sys.stderr)
                return 1
        print("stopping the broker", flush=True)
        return 0
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        broker.close()


if __name__ == "__main__":
    sys.exit(main())
