"""inbound: self-hosted inbound email -- SMTP in, signed webhook JSON out, every message recorded.

The flow, one module per stage: receive (:mod:`inbound.edge.smtp`, with its handler
:mod:`inbound.edge.handler`) -> spool (:mod:`inbound.edge.spool`) -> publish
(:mod:`inbound.edge.publish`) -> process (:mod:`inbound.processing.process`) -> deliver
(:mod:`inbound.delivery.deliver`) -> record (:mod:`inbound.activity.record`). Backends sit
behind small interfaces: :mod:`inbound.bus` and :mod:`inbound.activity`.
"""

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InboundError

if TYPE_CHECKING:
    from .config import Settings, load_settings


def __getattr__(name: str) -> Any:
    # Read when asked, so that importing a submodule does not import them: the supervisor needs
    # no configuration (with TOML, SSL and IDNA); importlib.metadata (with zipfile, csv, lzma and
    # bz2: 4 MB) is needed by no process that serves.
    if name in ("Settings", "load_settings"):
        from . import config

        return getattr(config, name)
    if name == "__version__":
        from importlib.metadata import version

        return version("inbound")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConfigError", "InboundError", "Settings", "__version__", "load_settings"]
