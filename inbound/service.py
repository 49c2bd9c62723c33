"""The composition root: builds every part from the settings and runs the roles asked for.

Roles (``inbound serve --roles``): ``smtp`` (receive + spool), ``publish``
(spool -> bus; runs beside ``smtp``, on the same data directory), ``process``,
``deliver``, ``record`` and ``api`` (the HTTP API, :mod:`inbound.web`; asked for
by name, as it needs ``[http] tokens``). One process may run any of them; by
default ``serve`` runs two processes under a supervisor
(:mod:`inbound.supervisor`), and each role may also run in its own process or
host; processes of the same role share the work through their consumer group.

Shutdown (SIGTERM/SIGINT): new SMTP connections get ``421 4.3.2``; messages
being spooled finish and get their 250; the publisher moves what is spooled to
the bus; each stage finishes and commits its batch in hand; deliveries under
way finish and record their outcome. Then the process exits 0.

SIGHUP reloads without a restart: the TLS files, and the configuration's
stream table once the whole file is valid (:mod:`inbound.reload`); it never
ends the process, not even while it starts: a HUP then is held, and reloads
once :meth:`Service.run` has its handler in place.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from . import metrics
from .bus import TOPICS, open_bus, record_limit
from .config import Settings
from .control import Control
from .cpus import CPUs
from .edge.handler import InboundHandler
from .edge.publish import Publisher
from .edge.smtp import InboundSMTP
from .edge.spool import Spool
from .errors import ConfigError
from .ops.running import announce
from .reload import reread
from .roles import DEFAULT_ROLES, preflight
from .routing import RoutingTable
from .worker import ConsumerWorker

# A stage's modules are imported by the process that runs it, not by every process: the edge
# holds no parser, HTTP client or database driver (about 20 MB less), the supervisor no stage.
if TYPE_CHECKING:
    from .delivery.deliver import Deliverer
    from .edge.authpolicy import SmtpAuthPolicy
    from .processing.auth import Authenticator
    from .processing.process import Processor
    from .web.backends import Backends

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
#: The SMTP edge's roles: a process that runs only these needs no bus to start.
EDGE_ROLES = ("smtp", "publish")
# The record stage: up to this many records a batch, waiting this long for them to come.
RECORD_BATCH = 500
RECORD_LINGER = 0.1


class Stoppable(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


def spool_for(settings: Settings) -> Spool:
    return Spool(settings.data)


def disk_guard(settings: Settings) -> str | None:
    """The 452 reply while free space is below what one more message may need, else None."""
    needed = max(settings.storage.min_free_bytes, int(1.5 * settings.smtp.max_message_size))
    if settings.data.free_bytes() < needed:
        return "452 4.3.1 Insufficient system storage"
    return None


class Service:
    def __init__(
        self,
        settings: Settings,
        roles: Sequence[str] = DEFAULT_ROLES,
        *,
        worker_cpus: CPUs | None = None,
        on_reloaded: Callable[[Settings], None] | None = None,
    ) -> None:
        """*worker_cpus*: where the parse worker runs, when this process runs on fewer CPUs (inbound/cpus.py).

        *on_reloaded*: given the settings each time a HUP reload is applied (a supervised child keeps them
        for its siblings, :mod:`inbound.snapshot`).
        """
        self.settings = settings
        self.roles = roles
        self.worker_cpus = worker_cpus
        self.on_reloaded = on_reloaded
        self.stages: list[Stoppable] = []  # started in this order, and stopped in it
        self.resources: list[Callable[[], None]] = []  # closed after every stage has stopped
        self.handler: InboundHandler | None = None  # the SMTP edge's, when this process runs it
        self.processor: Processor | None = None
        self.deliverer: Deliverer | None = None
        self.backends: Backends | None = None  # the API's

    def build(self) -> None:
        settings = self.settings
        preflight(settings, self.roles)
        if settings.data.marker.exists():  # a data directory of ours: `inbound status` shows this process
            self.resources.append(announce(settings.storage.data_dir, self.roles))
        self.routing = RoutingTable.from_streams(settings.streams)
        self._open_bus()
        if "smtp" in self.roles or "publish" in self.roles:
            self.spool = spool_for(settings)
        if "publish" in self.roles:
            self.publisher = Publisher(self.spool, self.bus, record_limit(settings))
            self.stages.append(self.publisher)
        auth = None
        if settings.auth.enabled and {"smtp", "process"} & set(self.roles):
            from .processing.auth import Authenticator

            auth = Authenticator(settings.auth)
            self.resources.append(auth.close)
        self.auth_policy: SmtpAuthPolicy | None = None
        if auth is not None and "smtp" in self.roles:
            from .edge.authpolicy import SmtpAuthPolicy

            self.auth_policy = SmtpAuthPolicy(auth, settings.streams)
            self.resources.append(self.auth_policy.close)
        if "process" in self.roles:
            self.processor = self._processor(auth)
        if "deliver" in self.roles:
            self.deliverer = self._deliverer()
        if "record" in self.roles or "api" in self.roles:
            from .activity import open_store

            store = open_store(settings)
            self.resources.append(store.close)
        if "record" in self.roles:
            from .activity.record import Recorder

            recorder = Recorder(store)
            self.stages.append(
                ConsumerWorker(
                    "record",
                    self.bus,
                    group="record",
                    topics=["messages", "events"],
                    handle=recorder.handle,
                    # The activity store is off the delivery path: a tenth of a second buys batches ten
                    # times larger, so ten times fewer transactions (1.2 -> 0.8 ms of store work a message).
                    max_records=RECORD_BATCH,
                    linger=RECORD_LINGER,
                )
            )
        if "api" in self.roles:
            if not settings.http.tokens and not settings.http.read_only_tokens:
                raise ConfigError(str(settings.path), "http.tokens", "the api role needs at least one token")
            from .web.backends import Backends
            from .web.server import ApiServer

            self.backends = Backends(settings, self.bus, store)
            self.stages.append(ApiServer(self.backends))

    def _open_bus(self) -> None:
        """The bus, with its topics and the pauses read, unless this process is the edge alone.

        The edge starts without the bus: restarted during an outage (a crash, an OOM kill), it must
        accept into the spool again at once; its publisher reaches the bus, making the topics it
        sends to, when it can. The stages that consume need it to start.
        """
        self.bus = open_bus(self.settings)
        self.resources.append(self.bus.close)
        if set(self.roles) - set(EDGE_ROLES):
            self.bus.ensure_topics(TOPICS)
        if {"process", "deliver"} & set(self.roles):  # the stages a pause holds
            self.control = Control(self.bus)
            self.control.refresh()
            self.stages.append(self.control)

    def _processor(self, auth: Authenticator | None) -> Processor:
        from .processing.isolation import IsolatedParser
        from .processing.process import Processor
        from .processing.screen import Screener
        from .processing.spam import Spamd

        settings = self.settings
        spamd = Spamd(settings.spam, settings.data.spamd_outage) if settings.spam.spamd else None
        screener = Screener(settings.smtp.hostname, auth, spamd)
        parser = IsolatedParser(self.worker_cpus, settings.processing.parse_worker_nice)
        parser.start()
        self.resources.append(parser.close)
        processor = Processor(
            self.routing,
            self.bus.producer(),
            settings.streams,
            screener,
            parser=parser,
            limits=settings.processing,
            record_limit=record_limit(settings),
            # None without a data directory of ours: the process role alone on Kafka runs stateless
            configured_streams=settings.data.configured_streams if settings.data.marker.exists() else None,
        )
        self.stages.append(
            ConsumerWorker(
                "process",
                self.bus,
                group="process",
                topics=["received"],
                handle=processor.handle,
                hold=self.control.everything_paused,
            )
        )
        return processor

    def _deliverer(self) -> Deliverer:
        from .delivery.deliver import Deliverer
        from .delivery.egress import webhook_transport
        from .delivery.outbox import Outbox

        settings = self.settings
        outbox = Outbox(settings.data.outbox)
        hooks = settings.webhooks
        transport = webhook_transport(allow_private=hooks.allow_private, ca_file=hooks.ca_file)
        self.resources += [outbox.close, transport.close]
        deliverer = Deliverer(settings, outbox, self.bus.producer(), transport, self.control.stream_paused)
        intake = ConsumerWorker(
            "deliver-intake", self.bus, group="deliver", topics=["messages"], handle=deliverer.handle
        )
        self.stages += [intake, deliverer]
        return deliverer

    def reload(self) -> None:
        """SIGHUP: the TLS files again (a renewed certificate), then the file's stream table if it is valid.

        Runs on the event loop, as every SMTP command does, so the edge swaps between two
        commands; the processor and the deliverer take the new streams up on their threads
        (:meth:`Processor.use`, :meth:`Deliverer.use`). Nothing accepted is touched: it is
        routed, rendered and delivered once, with the streams of the moment it reaches each stage.
        """
        if self.handler is not None and self.handler.tls is not None:
            self.handler.tls.reload()  # whatever the file says: a renewal must not wait for a config fix
        settings = reread(self.settings)
        if settings is None:
            return
        self.settings = settings
        self.routing = RoutingTable.from_streams(settings.streams)
        if self.handler is not None:
            self.handler.routing = self.routing
        if self.auth_policy is not None:
            self.auth_policy.use(settings.streams)
        if self.processor is not None:
            self.processor.use(self.routing, settings.streams)
        if self.deliverer is not None:
            self.deliverer.use(settings)
        if self.backends is not None:
            self.backends.settings = settings
        if self.on_reloaded is not None:
            self.on_reloaded(settings)

    async def run(
        self, on_started: Callable[[], None] = lambda: None, released: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run until SIGTERM/SIGINT, then shut down in order; *on_started* once everything serves.

        *released*, when given, is awaited after the drain and before the SMTP listener closes: a
        supervised edge keeps answering ``421`` until the whole service has stopped.
        """
        self.build()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # HUP asks for a reload of what can change without a restart; it never ends the process.
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        # Held since this process started (serve, the supervisor): one that came meanwhile reloads now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGHUP])
        for stage in self.stages:
            stage.start()
        server = None
        if "smtp" in self.roles:
            on_spooled = self.publisher.notify if "publish" in self.roles else (lambda: None)
            self.handler = handler = InboundHandler(
                self.settings.smtp,
                self.routing,
                self.spool,
                on_spooled,
                lambda: disk_guard(self.settings),
                auth_policy=self.auth_policy,
            )
            smtp = self.settings.smtp
            server = await loop.create_server(lambda: InboundSMTP(handler, smtp), smtp.host, smtp.port)
            log.info("smtp listening on %s:%d", smtp.host, smtp.port)
        log.info("inbound started: roles=%s bus=%s", ",".join(self.roles), self.settings.bus.backend)
        on_started()
        await stop.wait()
        log.info("shutting down: draining")
        if self.handler is not None:
            self.handler.draining = True
            deadline = time.monotonic() + DRAIN_SECONDS
            while self.handler.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for stage in self.stages:
            await asyncio.to_thread(stage.stop)
        if server is not None and released is not None:
            await released()
        if server is not None:
            server.close()
        for close in self.resources:
            close()
        metrics.process_ended()
        log.info("inbound stopped")
