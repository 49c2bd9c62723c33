"""inbound: self-hosted inbound email -- SMTP in, signed webhook JSON out, every message recorded.

The flow, one module per stage: receive (:mod:`inbound.smtp`) -> spool
(:mod:`inbound.spool`) -> publish (:mod:`inbound.publish`) -> process
(:mod:`inbound.process`) -> deliver (:mod:`inbound.deliver`) -> record
(:mod:`inbound.record`). Backends sit behind small interfaces:
:mod:`inbound.bus` and :mod:`inbound.activity`.
"""

from importlib.metadata import version

from .config import Settings, load_settings
from .errors import ConfigError, InboundError

__version__ = version("inbound")
__all__ = ["ConfigError", "InboundError", "Settings", "__version__", "load_settings"]
