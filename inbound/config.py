"""Settings: one frozen object built from a TOML file, validated before anything starts.

Every key is checked here, once, so that a typo or a wrong type stops the
service at start-up with a message naming the file, the key and the problem
(:class:`inbound.errors.ConfigError`) instead of failing later, mid-message.
Every problem of the file is found in one pass and reported together, one a
line, a stream named by its name (``streams.support.webhook_url``).
An unknown key is an error too: a misspelt ``alow_private`` must not silently
fall back to the default.

This is the only module that reads the environment: ``INBOUND_CONFIG`` (the
default config path) and ``INBOUND_DATA_DIR`` (overrides ``storage.data_dir``,
so one config file serves containers that each mount their own volume).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .addresses import canonical_domain
from .datadir import DataDir
from .durations import parse_duration
from .edge.tls import VERSIONS as TLS_VERSIONS
from .edge.tls import server_context
from .errors import ConfigError
from .netpolicy import refusal

DEFAULT_CONFIG = "inbound.toml"
_SMTP_COUNTS = ("max_connections", "max_connections_per_ip", "max_errors")
# 30 MiB: a record then fits the 64 MiB record limit we give Kafka topics (see bus/__init__.py).
MAX_MESSAGE_SIZE = 30 * 1024 * 1024
STREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
ACTIVITY_BACKENDS = ("sqlite", "postgresql")  # inbound.activity opens each; a test checks the two lists agree
# The webhook body formats a stream can ask for (inbound/processing/formats/ has one module each).
PAYLOAD_FORMATS = ("inbound", "postmark", "mailgun", "sendgrid")
MIN_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{24,}")
# An entry of drop_attachment_types: a content type (a subtype of "*" for all of a type) or a file extension.
ATTACHMENT_KIND = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/(?:[A-Za-z0-9!#$&^_.+-]+|\*)|\.[A-Za-z0-9_+-]{1,32}")
DEFAULT_RETRY_SCHEDULE = ("1m", "5m", "10m", "10m", "10m", "15m", "30m", "1h", "2h", "6h")

MIB = 1024 * 1024
_SIZE_UNITS = {"": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
# "3x + 256MiB" (a multiple of the message's size plus a fixed part) or "512MiB" (fixed).
_MEMORY_LIMIT = re.compile(r"(?:(\d+)\s*x\s*\+\s*)?(\d+)\s*(KiB|MiB|GiB|)")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path
    key_file: Path
    min_version: str = "TLSv1.2"
    require_tls: bool = False  # refuse MAIL before STARTTLS (530 5.7.0)


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
    """``[processing]``: limits on parsing one message (inbound/processing/isolation.py)."""

    parse_timeout: float = 30.0  # wall time, after which the parse worker is killed
    # parse_memory_limit = memory_per_byte x the message's size + memory_base: the address space
    # parsing may add to the parse worker's idle footprint.
    memory_per_byte: int = 3
    memory_base: int = 256 * MIB
    max_mime_depth: int = 100  # multiparts inside multiparts; deeper is Failed (processing/mimeshape.py)
    max_mime_parts: int = 10_000  # body parts in the whole message; more is Failed

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


def default_config_path() -> Path:
    return Path(os.environ.get("INBOUND_CONFIG", DEFAULT_CONFIG))


def load_settings(path: Path, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate *path*; raise one ConfigError naming every problem and its key."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), "", f"not UTF-8: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; a config is never that deep.
        raise ConfigError(str(path), "", "not valid TOML: nested too deeply") from None
    settings = _Reader(path).settings(raw)
    if environ.get("INBOUND_DATA_DIR"):
        storage = replace(settings.storage, data_dir=Path(environ["INBOUND_DATA_DIR"]))
        settings = replace(settings, storage=storage)
    return settings


class _Reader:
    """Walks the parsed TOML, checking each key and remembering where it is.

    It reads on past a problem, so that one pass finds them all (:meth:`settings` then raises
    one ConfigError listing every problem). A key that cannot be read -- missing, of the wrong
    type, not convertible -- is read as a placeholder (its default, mostly) that lets the
    reading go on, and is *unusable*: later checks of it say nothing, since they would only
    judge the placeholder. A placeholder never leaves this class.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[tuple[str, str]] = []  # (key, problem), in the order they are found
        self.unusable: set[str] = set()

    def problem(self, key: str, problem: str) -> None:
        if key not in self.unusable and (key, problem) not in self.problems:
            self.problems.append((key, problem))

    def unreadable(self, key: str, problem: str) -> None:
        """*key*'s value is replaced by a placeholder; *problem* says why."""
        self.problem(key, problem)
        self.unusable.add(key)

    def table(self, raw: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.unreadable(key, f"must be a table, not {type(value).__name__}")
            return {}
        for unknown in sorted(set(value) - allowed):
            self.problem(f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def get(self, table: dict[str, Any], section: str, key: str, kind: type[T], default: T) -> T:
        value = table.get(key, default)
        # bool is an int in Python; a TOML `true` where a number belongs is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.unreadable(f"{section}.{key}", f"must be {kind.__name__}, not {type(value).__name__} ({value!r})")
            return default
        return value

    def check(self, key: str, ok: bool, problem: str) -> bool:
        if not ok:
            self.problem(key, problem)
        return ok

    def strings(self, table: dict[str, Any], section: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.unreadable(f"{section}.{key}", "must be a list of strings")
            return default
        return tuple(value)

    def converted(self, key: str, value: str, convert: Callable[[str], T], placeholder: T) -> T:
        try:
            return convert(value)
        except ValueError as exc:
            self.unreadable(key, str(exc))
            return placeholder

    def valid(self, key: str, value: str, check: Callable[[str], object]) -> None:
        """*check* raises ValueError saying what is wrong with *value* (what it returns is not needed)."""
        try:
            check(value)
        except ValueError as exc:
            self.problem(key, str(exc))

    def duration(self, t: dict[str, Any], section: str, key: str, default: str) -> float:
        """A duration such as ``"30s"`` or ``"7d"`` (:func:`parse_duration`) in seconds."""
        given = self.get(t, section, key, str, default)
        return self.converted(f"{section}.{key}", given, parse_duration, parse_duration(default))

    def host_port(self, t: dict[str, Any], section: str, key: str, default: str) -> tuple[str, int]:
        given = self.get(t, section, key, str, default)
        return self.converted(f"{section}.{key}", given, split_host_port, split_host_port(default))

    def settings(self, raw: dict[str, Any]) -> Settings:
        sections = {"smtp", "storage", "bus", "activity", "webhooks", "auth", "spam", "processing", "streams", "http"}
        for unknown in sorted(set(raw) - sections):
            self.problem(unknown, f"unknown section (known: {', '.join(sorted(sections))})")
        smtp = self.smtp(raw)
        webhooks = self.webhooks(raw)
        auth = self.auth(raw)
        spam = self.spam(raw)
        streams = self.streams(raw, webhooks.allow_private, auth, spam)
        settings = Settings(
            path=self.path,
            smtp=smtp,
            storage=self.storage(raw),
            bus=self.bus(raw),
            activity=self.activity(raw),
            webhooks=webhooks,
            auth=auth,
            spam=spam,
            processing=self.processing(raw),
            streams=streams,
            http=self.http(raw),
        )
        if self.problems:
            (key, problem), *more = self.problems
            raise ConfigError(str(self.path), key, problem, more=more)
        return settings

    def smtp(self, raw: dict[str, Any]) -> SmtpSettings:
        keys = {"listen", "hostname", "max_message_size", "max_recipients", "max_command_line", "max_connections"}
        keys |= {"max_connections_per_ip", "command_timeout", "data_timeout", "max_errors", "tls", "proxy_protocol"}
        keys |= {"max_header_size"}
        t = self.table(raw, "smtp", keys)
        d = SmtpSettings()
        host, port = self.host_port(t, "smtp", "listen", f"{d.host}:{d.port}")
        size = self.get(t, "smtp", "max_message_size", int, d.max_message_size)
        self.check(
            "smtp.max_message_size",
            1024 <= size <= MAX_MESSAGE_SIZE,
            f"must be between 1024 and {MAX_MESSAGE_SIZE} bytes",
        )
        rcpts = self.get(t, "smtp", "max_recipients", int, d.max_recipients)
        self.check("smtp.max_recipients", rcpts >= 1, "must be at least 1")
        hostname = self.get(t, "smtp", "hostname", str, d.hostname)
        self.check("smtp.hostname", bool(re.fullmatch(r"[A-Za-z0-9.-]+", hostname)), "must be a host name")
        header_size = self.get(t, "smtp", "max_header_size", int, d.max_header_size)
        # Above max_message_size it never applies: the message as a whole is refused first.
        self.check("smtp.max_header_size", header_size >= 1024, "must be at least 1024 bytes")
        command_line = self.get(t, "smtp", "max_command_line", int, d.max_command_line)
        # RFC 5321 4.5.3.1.4: 512 octets; MAIL with every extension we offer stays well below 1 KiB.
        self.check("smtp.max_command_line", 1024 <= command_line <= 65536, "must be between 1024 and 65536 bytes")
        counts = [self.get(t, "smtp", key, int, getattr(d, key)) for key in _SMTP_COUNTS]
        for key, count in zip(_SMTP_COUNTS, counts, strict=True):
            self.check(f"smtp.{key}", count >= 1, "must be at least 1")
        timeouts = []
        for key in ("command_timeout", "data_timeout"):
            timeouts.append(self.duration(t, "smtp", key, f"{getattr(d, key):g}s"))
            self.check(f"smtp.{key}", timeouts[-1] > 0, "must be longer than 0s")
        connections, per_ip, errors = counts
        command_timeout, data_timeout = timeouts
        return SmtpSettings(
            host,
            port,
            hostname,
            size,
            rcpts,
            command_line,
            connections,
            per_ip,
            command_timeout,
            data_timeout,
            errors,
            self.tls(t) if "tls" in t else None,
            self.get(t, "smtp", "proxy_protocol", bool, False),
            header_size,
        )

    def tls(self, smtp: dict[str, Any]) -> TlsSettings:
        t = self.table(smtp, "tls", {"cert_file", "key_file", "min_version", "require_tls"})
        files = []
        found = len(self.problems)
        for key in ("cert_file", "key_file"):
            if key not in t:
                self.unreadable(f"smtp.tls.{key}", "is required with [smtp.tls]")
            path = Path(self.get(t, "smtp.tls", key, str, ""))
            path = path if path.is_absolute() else self.path.parent / path
            self.check(f"smtp.tls.{key}", os.access(path, os.R_OK), f"{path} is missing or not readable")
            files.append(path)
        version = self.get(t, "smtp.tls", "min_version", str, "TLSv1.2")
        self.check("smtp.tls.min_version", version in TLS_VERSIONS, f"must be one of {', '.join(TLS_VERSIONS)}")
        if len(self.problems) == found:  # the pair is tried only with files and a version that are all there
            try:
                server_context(files[0], files[1], version)
            except (ssl.SSLError, OSError) as exc:
                self.problem("smtp.tls.cert_file", f"{files[0]} and {files[1]} make no TLS key pair: {exc}")
        return TlsSettings(files[0], files[1], version, self.get(t, "smtp.tls", "require_tls", bool, False))

    def storage(self, raw: dict[str, Any]) -> StorageSettings:
        t = self.table(raw, "storage", {"data_dir", "min_free_bytes", "allow_shared_permissions"})
        data_dir = Path(self.get(t, "storage", "data_dir", str, "var"))
        if not data_dir.is_absolute():
            # Relative to the config file, so the service finds the same data wherever it is started.
            data_dir = self.path.parent / data_dir
        min_free = self.get(t, "storage", "min_free_bytes", int, 0)
        self.check("storage.min_free_bytes", min_free >= 0, "must not be negative")
        shared = self.get(t, "storage", "allow_shared_permissions", bool, False)
        return StorageSettings(data_dir, min_free, shared)

    def bus(self, raw: dict[str, Any]) -> BusSettings:
        keys = {"backend", "bootstrap_servers", "topic_prefix", "partitions", "replication_factor", "retention"}
        t = self.table(raw, "bus", keys)
        d = BusSettings()
        backend = self.get(t, "bus", "backend", str, d.backend)
        self.check("bus.backend", backend in ("embedded", "kafka"), f'must be "embedded" or "kafka", not {backend!r}')
        servers = self.strings(t, "bus", "bootstrap_servers", d.bootstrap_servers)
        self.check("bus.bootstrap_servers", bool(servers), "must name at least one host:port")
        for server in servers:
            self.valid("bus.bootstrap_servers", server, split_host_port)
        prefix = self.get(t, "bus", "topic_prefix", str, d.topic_prefix)
        self.check(
            "bus.topic_prefix",
            bool(re.fullmatch(r"[A-Za-z0-9._-]*", prefix)),
            "may hold only letters, digits, '.', '_' and '-'",
        )
        partitions = self.get(t, "bus", "partitions", int, d.partitions)
        self.check("bus.partitions", partitions >= 1, "must be at least 1")
        replication = self.get(t, "bus", "replication_factor", int, d.replication_factor)
        self.check("bus.replication_factor", replication >= 1, "must be at least 1")
        retention = self.duration(t, "bus", "retention", "7d")
        self.check("bus.retention", retention >= 3600, "must be at least 1h")
        return BusSettings(backend, servers, prefix, partitions, replication, retention)

    def activity(self, raw: dict[str, Any]) -> ActivitySettings:
        t = self.table(raw, "activity", {"backend", "dsn"})
        backend = self.get(t, "activity", "backend", str, ActivitySettings().backend)
        self.check(
            "activity.backend", backend in ACTIVITY_BACKENDS, f"must be one of {ACTIVITY_BACKENDS}, not {backend!r}"
        )
        dsn = self.get(t, "activity", "dsn", str, "")
        if backend == "postgresql" and not dsn.strip():
            self.unreadable("activity.dsn", 'is required with backend = "postgresql"')
        elif backend == "postgresql":
            self.valid("activity.dsn", dsn, check_dsn)
        return ActivitySettings(backend, dsn)

    def webhooks(self, raw: dict[str, Any]) -> WebhookSettings:
        keys = {
            "allow_private",
            "retry_schedule",
            "timeout",
            "concurrency_per_stream",
            "probe_interval",
            "max_hold",
            "ca_file",
            "alert_after",
            "alert_url",
            "alert_signing_secret",
        }
        t = self.table(raw, "webhooks", keys)
        d = WebhookSettings()
        allow_private = self.get(t, "webhooks", "allow_private", bool, d.allow_private)
        schedule = tuple(
            self.converted("webhooks.retry_schedule", step, parse_duration, 60.0)
            for step in self.strings(t, "webhooks", "retry_schedule", DEFAULT_RETRY_SCHEDULE)
        )
        timeout = self.duration(t, "webhooks", "timeout", "30s")
        self.check("webhooks.timeout", timeout > 0, "must be longer than 0s")
        concurrency = self.get(t, "webhooks", "concurrency_per_stream", int, d.concurrency_per_stream)
        self.check("webhooks.concurrency_per_stream", concurrency >= 1, "must be at least 1")
        probe_interval = self.duration(t, "webhooks", "probe_interval", "30s")
        self.check("webhooks.probe_interval", probe_interval > 0, "must be longer than 0s")
        max_hold = self.duration(t, "webhooks", "max_hold", "7d")
        self.check("webhooks.max_hold", max_hold > 0, "must be longer than 0s")
        ca = self.get(t, "webhooks", "ca_file", str, "")
        ca_file = (self.path.parent / ca) if ca else None  # an absolute path stays what it is
        self.check("webhooks.ca_file", ca_file is None or ca_file.is_file(), f"no file {ca_file}")
        alert_after = self.duration(t, "webhooks", "alert_after", "15m")
        self.check("webhooks.alert_after", alert_after > 0, "must be longer than 0s")
        alert_url = self.get(t, "webhooks", "alert_url", str, "") or None
        alert_secret = self.get(t, "webhooks", "alert_signing_secret", str, "") or None
        if alert_url is not None:
            self.valid("webhooks.alert_url", alert_url, lambda u: check_webhook_url(u, allow_private))
            self.check("webhooks.alert_signing_secret", alert_secret is not None, "is required with alert_url")
        if alert_secret is not None:
            self.valid("webhooks.alert_signing_secret", alert_secret, check_signing_secret)
        return WebhookSettings(
            allow_private,
            schedule,
            timeout,
            concurrency,
            probe_interval,
            max_hold,
            ca_file,
            alert_after,
            alert_url,
            alert_secret,
        )

    def auth(self, raw: dict[str, Any]) -> AuthSettings:
        t = self.table(raw, "auth", {"enabled", "resolvers", "timeout"})
        enabled = self.get(t, "auth", "enabled", bool, False)
        resolvers = tuple(
            self.converted("auth.resolvers", server, split_ip_port, ("127.0.0.1", 53))
            for server in self.strings(t, "auth", "resolvers", ())
        )
        timeout = self.duration(t, "auth", "timeout", "5s")
        self.check("auth.timeout", 0 < timeout <= 60, "must be longer than 0s and at most 60s")
        return AuthSettings(enabled, resolvers, timeout)

    def spam(self, raw: dict[str, Any]) -> SpamSettings:
        t = self.table(raw, "spam", {"spamd", "timeout"})
        spamd = self.host_port(t, "spam", "spamd", "127.0.0.1:783") if "spamd" in t else None
        timeout = self.duration(t, "spam", "timeout", "10s")
        self.check("spam.timeout", 0 < timeout <= 120, "must be longer than 0s and at most 120s")
        return SpamSettings(spamd, timeout)

    def processing(self, raw: dict[str, Any]) -> ProcessingSettings:
        t = self.table(raw, "processing", {"parse_timeout", "parse_memory_limit", "max_mime_depth", "max_mime_parts"})
        d = ProcessingSettings()
        timeout = self.duration(t, "processing", "parse_timeout", f"{d.parse_timeout:g}s")
        self.check("processing.parse_timeout", 0 < timeout <= 600, "must be longer than 0s and at most 10m")
        limit = _MEMORY_LIMIT.fullmatch(self.get(t, "processing", "parse_memory_limit", str, "3x + 256MiB").strip())
        if limit is None:
            self.problem(
                "processing.parse_memory_limit",
                'must be "<N>x + <size>" (N times the message size plus a fixed part) or "<size>", '
                "a size being bytes or a number with KiB, MiB or GiB",
            )
            per_byte, base = d.memory_per_byte, d.memory_base
        else:
            per_byte = int(limit[1] or 0)
            base = int(limit[2]) * _SIZE_UNITS[limit[3]]
        self.check("processing.parse_memory_limit", base >= 64 * MIB, "its fixed part must be at least 64MiB")
        self.check("processing.parse_memory_limit", per_byte <= 100, "must be at most 100x the message size")
        shape = []
        for key in ("max_mime_depth", "max_mime_parts"):
            shape.append(self.get(t, "processing", key, int, getattr(d, key)))
            self.check(f"processing.{key}", 1 <= shape[-1] <= 1_000_000, "must be between 1 and 1000000")
        return ProcessingSettings(timeout, per_byte, base, *shape)

    def verdict_policies(
        self, t: dict[str, Any], section: str, auth: AuthSettings, spam: SpamSettings
    ) -> dict[str, Any]:
        """A stream's policies on verdicts; each needs the verdict it acts on to be computed."""
        policies: dict[str, Any] = {}
        for key in ("on_dmarc_fail", "on_spam"):
            action = self.get(t, section, key, str, DELIVER)
            self.check(f"{section}.{key}", action in VERDICT_ACTIONS, f"must be one of {', '.join(VERDICT_ACTIONS)}")
            policies[key] = action
        policies["reject_dmarc_reject"] = self.get(t, section, "reject_dmarc_reject", bool, False)
        policies["spf_fail"] = self.get(t, section, "spf_fail", str, "accept")
        self.check(f"{section}.spf_fail", policies["spf_fail"] in ("accept", "reject"), 'must be "accept" or "reject"')
        policies["spam_threshold"] = self.number(t, section, "spam_threshold")
        auth_keys = [k for k in ("on_dmarc_fail", "reject_dmarc_reject", "spf_fail") if k in t]
        for key in auth_keys:
            self.check(f"{section}.{key}", auth.enabled, "needs the verdicts: set [auth] enabled = true")
        for key in ("on_spam", "spam_threshold"):
            self.check(f"{section}.{key}", key not in t or spam.spamd is not None, "needs [spam] spamd")
        return policies

    def http(self, raw: dict[str, Any]) -> HttpSettings:
        t = self.table(raw, "http", {"listen", "tokens", "read_only_tokens"})
        d = HttpSettings()
        host, port = self.host_port(t, "http", "listen", f"{d.host}:{d.port}")
        tokens = self.strings(t, "http", "tokens", ())
        read_only = self.strings(t, "http", "read_only_tokens", ())
        for key, values in (("http.tokens", tokens), ("http.read_only_tokens", read_only)):
            for token in values:
                # a bearer token is a password: long enough not to be guessed, and sendable in a header
                self.check(
                    key, bool(MIN_TOKEN.fullmatch(token)), "each token must be 24 or more of A-Z a-z 0-9 - . _ ~ + /"
                )
        self.check("http.read_only_tokens", not set(tokens) & set(read_only), "a token is also in http.tokens")
        return HttpSettings(host, port, tokens, read_only)

    def streams(
        self, raw: dict[str, Any], allow_private: bool, auth: AuthSettings, spam: SpamSettings
    ) -> tuple[StreamSettings, ...]:
        entries = raw.get("streams", [])
        if not isinstance(entries, list):
            self.problem("streams", "must be an array of tables ([[streams]])")
            return ()
        if not entries:
            self.problem("streams", "no [[streams]]: inbound would accept no mail (see examples/inbound.toml)")
        streams: list[StreamSettings] = []
        owner: dict[str, str] = {}
        for i, entry in enumerate(entries):
            named = entry.get("name") if isinstance(entry, dict) else None
            # A stream is named by its name in problems; by its place while it has no usable one.
            is_name = isinstance(named, str) and bool(STREAM_NAME.fullmatch(named))
            unique = is_name and named not in {s.name for s in streams}
            section = f"streams.{named}" if unique else f"streams[{i}]"
            if not isinstance(entry, dict):
                self.problem(section, f"must be a table, not {type(entry).__name__}")
                continue
            t = self.table({section: entry}, section, _STREAM_KEYS)
            for key in _REQUIRED_STREAM_KEYS:
                if key not in t:
                    self.unreadable(f"{section}.{key}", "is required")
            name = self.get(t, section, "name", str, "")
            if self.check(
                f"{section}.name", is_name, "must be 1-63 of a-z, 0-9 and '_', starting with a letter or digit"
            ):
                self.check(f"{section}.name", unique, f"duplicate stream name {name!r}")
            addresses = self.strings(t, section, "addresses", ())
            self.check(f"{section}.addresses", bool(addresses), "must list at least one address")
            for address in addresses:
                key = f"{section}.addresses"
                self.check(key, _valid_pattern(address), f"{address!r} is not an address or *@domain")
                self.check(
                    key,
                    address.lower() not in owner,
                    f"{address!r} is already in stream {owner.get(address.lower())!r}",
                )
                owner[address.lower()] = name
            url = self.get(t, section, "webhook_url", str, "")
            self.valid(f"{section}.webhook_url", url, lambda u: check_webhook_url(u, allow_private))
            secret, *other_secrets = self.signing_secrets(t, section)
            blocks = self.strings(t, section, "block_senders", ())
            for pattern in blocks:
                self.check(
                    f"{section}.block_senders", _valid_pattern(pattern), f"{pattern!r} is not an address or *@domain"
                )
            policies = self.verdict_policies(t, section, auth, spam)
            max_size, max_count, drop_types = self.attachment_policy(t, section)
            streams.append(
                StreamSettings(
                    name,
                    addresses,
                    url,
                    secret,
                    blocks,
                    *self.payload_options(t, section),
                    **policies,
                    other_signing_secrets=tuple(other_secrets),
                    max_requests_per_second=self.rate(t, section),
                    silence_alert_after=self.silence(t, section),
                    max_attachment_size=max_size,
                    max_attachments=max_count,
                    drop_attachment_types=drop_types,
                )
            )
        return tuple(streams)

    def attachment_policy(self, t: dict[str, Any], section: str) -> tuple[int | None, int | None, tuple[str, ...]]:
        """``max_attachment_size`` (bytes, 1 or more), ``max_attachments`` (0 or more), ``drop_attachment_types``."""
        limits: list[int | None] = []
        for key, least in (("max_attachment_size", 1), ("max_attachments", 0)):
            value = t.get(key)
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= least)
            limits.append(
                value if self.check(f"{section}.{key}", ok, f"must be a whole number, {least} or more") else None
            )
        kinds = self.strings(t, section, "drop_attachment_types", ())
        for kind in kinds:
            self.check(
                f"{section}.drop_attachment_types",
                bool(ATTACHMENT_KIND.fullmatch(kind)),
                f"{kind!r} is neither a content type (image/png, image/*) nor an extension (.exe)",
            )
        return limits[0], limits[1], tuple(kind.lower() for kind in kinds)

    def number(self, t: dict[str, Any], section: str, key: str) -> float | None:
        """An optional number: TOML's int or float (a bool is not one)."""
        value = t.get(key)
        if value is None:
            return None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if self.check(f"{section}.{key}", number, "must be a number") else None

    def silence(self, t: dict[str, Any], section: str) -> float | None:
        if "silence_alert_after" not in t:
            return None
        silence = self.duration(t, section, "silence_alert_after", "1h")  # the default: a placeholder only
        self.check(f"{section}.silence_alert_after", silence > 0, "must be longer than 0s")
        return silence

    def rate(self, t: dict[str, Any], section: str) -> float | None:
        rate = self.number(t, section, "max_requests_per_second")
        self.check(f"{section}.max_requests_per_second", rate is None or rate > 0, "must be more than 0")
        return rate

    def signing_secrets(self, t: dict[str, Any], section: str) -> tuple[str, ...]:
        """``signing_secret``, or ``signing_secrets`` (several while a receiver moves to a new key)."""
        one, several = "signing_secret" in t, "signing_secrets" in t
        if not (one or several):
            self.unreadable(f"{section}.signing_secret", "is required (or signing_secrets)")
            return ("",)
        self.check(
            f"{section}.signing_secrets", not (one and several), "give signing_secret or signing_secrets, not both"
        )
        if one:
            secrets: tuple[str, ...] = (self.get(t, section, "signing_secret", str, ""),)
            key = f"{section}.signing_secret"
        else:
            secrets = self.strings(t, section, "signing_secrets", ())
            key = f"{section}.signing_secrets"
            self.check(key, bool(secrets), "must list at least one secret")
            self.check(key, len(set(secrets)) == len(secrets), "lists a secret twice")
        for secret in secrets:
            self.valid(key, secret, check_signing_secret)
        return secrets or ("",)

    def payload_options(self, t: dict[str, Any], section: str) -> tuple[str, bool, str | None, bool]:
        """``payload_format`` and the keys that go with it; a key for another format is an error, not ignored."""
        fmt = self.get(t, section, "payload_format", str, "inbound")
        self.check(
            f"{section}.payload_format",
            fmt in PAYLOAD_FORMATS,
            f"must be one of {', '.join(map(repr, PAYLOAD_FORMATS))}, not {fmt!r}",
        )
        include_raw = self.get(t, section, "include_raw", bool, False)
        sendgrid_raw = self.get(t, section, "sendgrid_raw", bool, False)
        self.check(
            f"{section}.sendgrid_raw", fmt == "sendgrid" or not sendgrid_raw, 'needs payload_format = "sendgrid"'
        )
        key = self.get(t, section, "mailgun_signing_key", str, "") or None
        if fmt == "mailgun":
            self.check(f"{section}.mailgun_signing_key", key is not None, 'is required with payload_format = "mailgun"')
        else:
            self.check(f"{section}.mailgun_signing_key", key is None, 'needs payload_format = "mailgun"')
        return fmt, include_raw, key, sendgrid_raw


_REQUIRED_STREAM_KEYS = ("name", "addresses", "webhook_url")
_STREAM_KEYS = {
    "name",
    "addresses",
    "webhook_url",
    "signing_secret",
    "signing_secrets",
    "max_requests_per_second",
    "silence_alert_after",
    "block_senders",
    "payload_format",
    "include_raw",
    "mailgun_signing_key",
    "sendgrid_raw",
    "max_attachment_size",
    "max_attachments",
    "drop_attachment_types",
    "on_dmarc_fail",
    "reject_dmarc_reject",
    "spf_fail",
    "spam_threshold",
    "on_spam",
}


def split_ip_port(value: str) -> tuple[str, int]:
    """``ip:port`` (``[v6]:port`` too): a DNS server is named by address, as in resolv.conf."""
    host, port = split_host_port(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not ip:port (a DNS server is given by its address)") from None
    return host, port


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)


def _valid_pattern(pattern: str) -> bool:
    local, at, domain = pattern.rpartition("@")
    try:
        canonical_domain(domain)
    except ValueError:
        return False
    return bool(at and local and "." in domain and " " not in pattern)


def check_dsn(dsn: str) -> None:
    """A libpq connection string (``host=... dbname=...`` or ``postgresql://...``), checked without connecting."""
    from psycopg import ProgrammingError  # imported only for a PostgreSQL store
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ValueError(f"is not a libpq connection string: {exc}") from None


def check_signing_secret(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise ValueError('must start with "whsec_" followed by base64 (a Standard Webhooks secret)')
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError('the part after "whsec_" is not valid base64') from None
    if not 24 <= len(key) <= 64:
        raise ValueError("the key must decode to 24-64 bytes")


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s), and (unless allowed) hosts that are not public in any spelling.

    A name is checked again at every connection (inbound.delivery.egress); this catches at once
    what needs no DNS: ``127.1``, ``0x7f.0.0.1``, ``[::ffff:127.0.0.1]``, ``localhost.`` and the like.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    why = None if allow_private else refusal(parts.hostname)
    if why:
        raise ValueError(f"{why} (set webhooks.allow_private = true to allow it)")
