"""The sections other than ``[[streams]]``: ``[smtp]`` (and ``[smtp.tls]``), ``[storage]``, ``[bus]``,
``[activity]``, ``[webhooks]``, ``[auth]``, ``[spam]``, ``[processing]`` and ``[http]``.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

from ..durations import parse_duration
from ..edge.tls import VERSIONS as TLS_VERSIONS
from ..edge.tls import server_context
from .checks import check_dsn, check_signing_secret, check_webhook_url, split_host_port, split_ip_port
from .reading import Reader
from .settings import (
    ACTIVITY_BACKENDS,
    DATA_IN_MEMORY_MESSAGES,
    DEFAULT_RETRY_SCHEDULE,
    MAX_MESSAGE_SIZE,
    MIB,
    ActivitySettings,
    AuthSettings,
    BusSettings,
    HttpSettings,
    ProcessingSettings,
    SmtpSettings,
    SpamSettings,
    StorageSettings,
    TlsSettings,
    WebhookSettings,
)

_SMTP_COUNTS = ("max_connections", "max_connections_per_ip", "max_errors")
MIN_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{24,}")
_SIZE_UNITS = {"": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
# "3x + 256MiB" (a multiple of the message's size plus a fixed part) or "512MiB" (fixed).
# Digits bounded: Python refuses to make an int of more than 4,300 (and no memory is that large).
_MEMORY_LIMIT = re.compile(r"(?:(\d{1,6})\s*x\s*\+\s*)?(\d{1,15})\s*(KiB|MiB|GiB|)")


class SectionsReader(Reader):
    def smtp(self, raw: dict[str, Any]) -> SmtpSettings:
        keys = {"listen", "hostname", "max_message_size", "max_recipients", "max_command_line", "max_connections"}
        keys |= {"max_connections_per_ip", "command_timeout", "data_timeout", "max_errors", "tls", "proxy_protocol"}
        keys |= {"max_header_size", "max_data_in_memory"}
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
        in_memory = self.get(t, "smtp", "max_data_in_memory", int, DATA_IN_MEMORY_MESSAGES * size)
        self.check("smtp.max_data_in_memory", in_memory >= size, "must be at least smtp.max_message_size")
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
            in_memory,
        )

    def tls(self, smtp: dict[str, Any]) -> TlsSettings:
        t = self.table(smtp, "tls", {"cert_file", "key_file", "min_version", "require_tls"})
        files = []
        found = len(self.problems)
        for key in ("cert_file", "key_file"):
            if key not in t:
                self.unreadable(f"smtp.tls.{key}", "is required with [smtp.tls]")
            path = self.location(t, "smtp.tls", key, "")
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
        data_dir = self.location(t, "storage", "data_dir", "var")
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
        ca_file = self.location(t, "webhooks", "ca_file", "") if t.get("ca_file") else None
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
        keys = {
            "parse_timeout",
            "parse_memory_limit",
            "max_mime_depth",
            "max_mime_parts",
            "pin_pipeline",
            "parse_worker_nice",
            "unknown_stream_grace",
        }
        t = self.table(raw, "processing", keys)
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
        depth, parts = shape
        pin = self.get(t, "processing", "pin_pipeline", bool, d.pin_pipeline)
        nice = self.get(t, "processing", "parse_worker_nice", int, d.parse_worker_nice)
        self.check("processing.parse_worker_nice", 0 <= nice <= 19, "must be between 0 and 19 (as nice(1) counts)")
        grace = self.duration(t, "processing", "unknown_stream_grace", f"{d.unknown_stream_grace:g}s")
        self.check("processing.unknown_stream_grace", grace <= 3600, "must be at most 1h")
        return ProcessingSettings(timeout, per_byte, base, depth, parts, pin, nice, grace)

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
