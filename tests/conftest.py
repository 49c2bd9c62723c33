"""Shared fixtures. The pipeline fixtures live in tests/fixtures.py (a plugin)."""
# conftest.py is shared: other engineers add their fixtures here too. Keep each group of
# fixtures in its own marked block; the Kafka broker and bus backend fixtures are below.

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inbound.bus import Bus
from tests.dnsserver import DnsServer
from tests.kafka_broker import KafkaBroker, fetch_jars
from tests.postgres_server import PostgresServer
from tests.spamd import SpamdProcess

pytest_plugins = ["tests.fixtures", "tests.edge_harness"]

# Fixtures that start inbound or a broker as a real process: a test that uses one is end to end.
_PROCESS_FIXTURES = frozenset({"pipeline", "kafka_broker", "bus_toml_kafka", "spamd", "dns_server", "postgres_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs a real process ``e2e``; ``make test-fast`` leaves them out."""
    for item in items:
        if _PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.e2e)


# --- Kafka broker and bus backends (owner: bus) -------------------------------------------
# kafka_broker: one real broker for the whole session (tests/kafka_broker.py); it fails,
# never skips, when the broker cannot be fetched or started.
# bus_factory: runs a test once per backend; each call makes a new Bus over the same
# per-test log (a fresh SQLite file, or a unique Kafka topic prefix).


# Ports of the brokers the tests started: a socket to one of them left for the garbage collector
# is kafka-python's (see pytest_configure below), never one of ours.
_BROKER_PORTS: set[int] = set()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker(fetch_jars())
    _BROKER_PORTS.add(broker.port)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    yield broker
    broker.close()


def _kafka_python_left_it_open(unraisable: sys.UnraisableHookArgs) -> bool:
    """An unclosed socket to a test broker, reported when the garbage collector finds it.

    kafka-python 3.0.12 builds each broker connection in a coroutine on its I/O thread; now and
    then (once in a clean-clone run of the suite) one such socket, allocated in
    ``kafka/net/manager.py`` ``_build_transport`` (found with tracemalloc), is never closed by the
    library and reaches the garbage collector, whose ResourceWarning lands in whichever test is
    running then. Every client of ours is closed (the contract tests' buses by ``bus_factory``).
    """
    leaked = unraisable.object
    if not isinstance(unraisable.exc_value, ResourceWarning) or not isinstance(leaked, socket.socket):
        return False
    try:
        peer = leaked.getpeername()
    except OSError:
        return False
    return isinstance(peer, tuple) and peer[1] in _BROKER_PORTS


@pytest.hookimpl(trylast=True)  # after pytest's own unraisable-exception plugin has set its hook
def pytest_configure(config: pytest.Config) -> None:
    """Every unraisable exception still fails its test (``filterwarnings = error``), except
    kafka-python's leaked broker sockets (:func:`_kafka_python_left_it_open`)."""
    pytest_hook = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not _kafka_python_left_it_open(unraisable):
            pytest_hook(unraisable)

    sys.unraisablehook = hook


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Bus]]:
    """A callable that returns a new Bus; every Bus of one test shares the same log."""
    made: list[Bus] = []
    if request.param == "kafka":
        from inbound.bus.kafka import KafkaBus

        broker: KafkaBroker = request.getfixturevalue("kafka_broker")
        broker.start()  # no-op when running; brings it back if an outage test left it stopped
        prefix = f"t{uuid.uuid4().hex[:12]}."

        def make() -> Bus:
            made.append(KafkaBus(broker.bootstrap, topic_prefix=prefix))
            return made[-1]

    else:
        from inbound.bus.embedded import EmbeddedBus

        path = tmp_path / "bus.db"

        def make() -> Bus:
            made.append(EmbeddedBus(path))
            return made[-1]

    yield make
    for bus in made:
        bus.close()


# --- end of Kafka broker and bus backends --------------------------------------------------


# --- Sender verdicts and spam (owner: auth) ------------------------------------------------
# dns_server: a loopback DNS server (tests/dnsserver.py) for the records a test publishes.
# spamd: one real spamd for the session (tests/spamd.py); fails, never skips, when it cannot start.


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpamdProcess]:
    process = SpamdProcess(tmp_path_factory.mktemp("spamd"))
    try:
        process.start()
    except BaseException:
        process.stop()
        raise
    yield process
    process.stop()


# --- end of sender verdicts and spam -------------------------------------------------------


# --- PostgreSQL server (owner: activity store) ---------------------------------------------
# postgres_server: one real server for the whole session (tests/postgres_server.py); it fails,
# never skips, when PostgreSQL is not installed or does not start. Each test makes its own
# database with new_database().


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    yield server
    server.close()


# --- end of PostgreSQL server ---------------------------------------------------------------
