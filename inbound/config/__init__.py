"""Settings: one frozen object built from a TOML file, validated before anything starts.

Every key is checked once, at start-up, so that a typo or a wrong type stops
the service with a message naming the file, the key and the problem
(:class:`inbound.errors.ConfigError`) instead of failing later, mid-message.
Every problem of the file is found in one pass and reported together, one a
line, a stream named by its name (``streams.support.webhook_url``). An unknown
key is an error too: a misspelt ``alow_private`` must not silently fall back
to the default.

The modules: ``settings.py`` (the frozen dataclasses and their defaults),
``load.py`` (reading the file; the only one that reads the environment),
``reading.py`` (the typed getters that note a problem and read on),
``sections.py`` and ``streams.py`` (each section's keys), ``checks.py``
(checks of single values, shared with the CLI).
"""

from typing import TYPE_CHECKING, Any

from .settings import (
    ACTIVITY_BACKENDS,
    BLOCK,
    DEFAULT_RETRY_SCHEDULE,
    DELIVER,
    FLAG,
    MAX_MESSAGE_SIZE,
    MIB,
    PAYLOAD_FORMATS,
    STREAM_NAME,
    VERDICT_ACTIONS,
    ActivitySettings,
    AuthSettings,
    BusSettings,
    HttpSettings,
    ProcessingSettings,
    Settings,
    SmtpSettings,
    SpamSettings,
    StorageSettings,
    StreamSettings,
    TlsSettings,
    WebhookSettings,
)

if TYPE_CHECKING:
    from .checks import check_dsn, check_signing_secret, check_webhook_url, split_host_port, split_ip_port
    from .load import DEFAULT_CONFIG, default_config_path, load_settings

_LAZY = {
    "check_dsn": "checks", "check_signing_secret": "checks", "check_webhook_url": "checks",
    "split_host_port": "checks", "split_ip_port": "checks",
    "DEFAULT_CONFIG": "load", "default_config_path": "load", "load_settings": "load",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    # Reading and checking a file (TOML, SSL for the TLS keys, IDNA) is for the processes that
    # load one; the parse worker is handed its settings and needs only their classes (1.5 MiB).
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVITY_BACKENDS",
    "BLOCK",
    "DEFAULT_CONFIG",
    "DEFAULT_RETRY_SCHEDULE",
    "DELIVER",
    "FLAG",
    "MAX_MESSAGE_SIZE",
    "MIB",
    "PAYLOAD_FORMATS",
    "STREAM_NAME",
    "VERDICT_ACTIONS",
    "ActivitySettings",
    "AuthSettings",
    "BusSettings",
    "HttpSettings",
    "ProcessingSettings",
    "Settings",
    "SmtpSettings",
    "SpamSettings",
    "StorageSettings",
    "StreamSettings",
    "TlsSettings",
    "WebhookSettings",
    "check_dsn",
    "check_signing_secret",
    "check_webhook_url",
    "default_config_path",
    "load_settings",
    "split_host_port",
    "split_ip_port",
]
