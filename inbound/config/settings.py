"""The settings: frozen dataclasses, one per section of the configuration file, and their defaults.

Built only by the reader (``load.py``) after it has checked every key, so that
whoever holds a :class:`Settings` may trust each value without checking it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..datadir import DataDir
from ..durations import parse_duration

# 30 MiB: a record then fits the 64 MiB record limit we give Kafka topics (see bus/__init__.py).
MAX_MESSAGE_SIZE = 30 * 1024 * 1024
MIB = 1024 * 1024
STREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")  # matched whole
ACTIVITY_BACKENDS = ("sqlite", "postgresql")  # inbound.activity opens each; a test checks the two lists agree
# The webhook body formats a stream can ask for (inbound/processing/formats/ has one module each).
PAYLOAD_FORMATS = ("inbound", "postmark", "mailgun", "sendgrid")
DEFAULT_RETRY_SCHEDULE = ("1m", "5m", "10m", "10m", "10m", "15m", "30m", "1h", "2h", "6h")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path
    key_file: Path
    min_version: str = "TLSv1.2"
    require_tls: bool = False  # refuse MAIL before STARTTLS (530 5.7.0)


# smtp.max_data_in_memory, unless set: this many messages of smtp.max_message_size.
DATA_IN_MEMORY_MESSAGES = 4


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = "mx.example.test"
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    max_command_line: int = 4096  # bytes of one command line, as Postfix caps it (DATA lines are not capped)
    max_connections: int = 300
    max_connections_per_ip: int = 20
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: idle between commands
    data_timeout: float = 600.0  # the whole of one DATA, however slowly it drips
    max_errors: int = 20  # refused commands (bad syntax, unknown mailboxes ...) per session
    tls: TlsSettings | None = None  # STARTTLS offered only when set
    proxy_protocol: bool = False  # behind a load balancer: every connection starts with a PROXY header
    max_header_size: int = 1_048_576  # bytes of the header section, measured while DATA streams in
    # Bytes of DATA held in memory across all sessions (edge/limits.py): by default, that many messages.
    max_data_in_memory: int = DATA_IN_MEMORY_MESSAGES * max_message_size


@dataclass(frozen=True, slots=True)
class StorageSettings:
    data_dir: Path = Path("var")
    min_free_bytes: int = 0
    allow_shared_permissions: bool = False  # serve a data directory that group or others may read


@dataclass(frozen=True, slots=True)
class BusSettings:
    backend: str = "embedded"
    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic_prefix: str = "inbound."
    partitions: int = 3
    replication_factor: int = 1
    retention: float = 7 * 86400.0  # Kafka retention of `received` and `messages`


@dataclass(frozen=True, slots=True)
class ActivitySettings:
    backend: str = "sqlite"  # one of inbound.activity.BACKENDS; "sqlite" keeps <data_dir>/activity.db
    dsn: str = ""  # "postgresql": libpq connection string; libpq's PG* variables (PGPASSWORD) fill the rest


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    allow_private: bool = False
    retry_schedule: tuple[float, ...] = tuple(parse_duration(d) for d in DEFAULT_RETRY_SCHEDULE)
    timeout: float = 30.0
    concurrency_per_stream: int = 4
    probe_interval: float = 30.0
    max_hold: float = 7 * 86400.0  # how long deliveries wait for an endpoint that is down, then Failed
    ca_file: Path | None = None  # PEM bundle of the CAs webhook certificates are verified against
    alert_after: float = 15 * 60.0  # an endpoint down this long raises endpoint_failing
    alert_url: str | None = None  # where alerts are also POSTed, signed with alert_signing_secret
    alert_signing_secret: str | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``[auth]``: SPF, DKIM, DMARC and ARC verdicts (inbound/processing/auth.py)."""

    enabled: bool = False
    resolvers: tuple[tuple[str, int], ...] = ()  # (ip, port); empty: the system's (/etc/resolv.conf)
    timeout: float = 5.0  # the most the verdicts of one message may wait for DNS


@dataclass(frozen=True, slots=True)
class SpamSettings:
    """``[spam]``: scoring by SpamAssassin's spamd (inbound/processing/spam.py)."""

    spamd: tuple[str, int] | None = None  # None: no scoring
    timeout: float = 10.0  # longer than this and the message goes on unscored


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    """``[processing]``: limits on parsing a message (processing/isolation.py); CPUs and priority (cpus.py)."""

    parse_timeout: float = 30.0  # wall time, after which the parse worker is killed
    # parse_memory_limit = memory_per_byte x the message's size + memory_base: the address space
    # parsing may add to the parse worker's idle footprint.
    memory_per_byte: int = 3
    memory_base: int = 256 * MIB
    max_mime_depth: int = 100  # multiparts inside multiparts; deeper is Failed (processing/mimeshape.py)
    max_mime_parts: int = 10_000  # body parts in the whole message; more is Failed
    pin_pipeline: bool = True  # serve: the pipeline process on one CPU, the edge on the others (inbound/cpus.py)
    parse_worker_nice: int = 0  # how far below its pipeline process's the parse worker's CPU priority is (cpus.py)
    # How long messages for a stream this host has never had are retried, as a configuration not yet
    # rolled out here, before they are Failed (processing/process.py).
    unknown_stream_grace: float = 300.0

    def memory_limit(self, size: int) -> int:
        return self.memory_per_byte * size + self.memory_base


DELIVER, FLAG, BLOCK = "deliver", "flag", "block"
VERDICT_ACTIONS = (DELIVER, FLAG, BLOCK)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP API (role ``api``): where it listens and the bearer tokens it accepts."""

    host: str = "127.0.0.1"
    port: int = 8080
    tokens: tuple[str, ...] = ()  # may read and act (retry, pause)
    read_only_tokens: tuple[str, ...] = ()  # may only read


@dataclass(frozen=True, slots=True)
class StreamSettings:
    name: str
    addresses: tuple[str, ...]
    webhook_url: str
    signing_secret: str
    block_senders: tuple[str, ...] = ()
    payload_format: str = "inbound"  # one of PAYLOAD_FORMATS
    include_raw: bool = False  # add the message as received to the payload
    mailgun_signing_key: str | None = None  # signs the mailgun format's timestamp + token
    sendgrid_raw: bool = False  # the sendgrid format's raw mode: the whole message in `email`
    on_dmarc_fail: str = DELIVER  # one of VERDICT_ACTIONS
    reject_dmarc_reject: bool = False  # 550 at end of DATA for a p=reject domain that fails DMARC
    spf_fail: str = "accept"  # or "reject": 550 at MAIL FROM when SPF fails
    spam_threshold: float | None = None  # None: spamd's own required score
    on_spam: str = DELIVER  # one of VERDICT_ACTIONS
    # Key rotation: `signing_secrets = [first, *others]` in the config; each POST is signed with all.
    other_signing_secrets: tuple[str, ...] = ()
    max_requests_per_second: float | None = None  # POSTs to this stream's endpoint; None: no limit
    silence_alert_after: float | None = None  # no mail for this long raises stream_silent
    # Attachment policy (processing/attachpolicy.py): what is dropped is listed in the payload.
    max_attachment_size: int | None = None  # bytes, decoded; None: no limit
    max_attachments: int | None = None  # kept in message order; None: no limit
    drop_attachment_types: tuple[str, ...] = ()  # "type/subtype", "type/*" or ".ext", lower case

    @property
    def signing_secrets(self) -> tuple[str, ...]:
        return (self.signing_secret, *self.other_signing_secrets)


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    bus: BusSettings = field(default_factory=BusSettings)
    activity: ActivitySettings = field(default_factory=ActivitySettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    spam: SpamSettings = field(default_factory=SpamSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    streams: tuple[StreamSettings, ...] = ()
    http: HttpSettings = field(default_factory=HttpSettings)

    def stream(self, name: str) -> StreamSettings:
        return next(s for s in self.streams if s.name == name)

    @property
    def data(self) -> DataDir:
        """Every path under ``storage.data_dir``."""
        return DataDir(self.storage.data_dir)
