"""inbound: self-hosted inbound email -- SMTP in, signed webhook JSON out, every message recorded.

The flow, one module per stage: receive (:mod:`inbound.edge.smtp`) -> spool
(:mod:`inbound.edge.spool`) -> publish (:mod:`inbound.edge.publish`) -> process
(:mod:`inbound.processing.process`) -> deliver (:mod:`inbound.delivery.deliver`) -> record
(:mod:`inbound.activity.record`). Backends sit behind small interfaces:
:mod:`inbound.bus` and :mod:`inbound.activity`.
"""

from importlib.metadata import version

from .config import Settings, load_settings
from .errors import ConfigError, InboundError

__version__ = version("inbound")
__all__ = ["ConfigError", "InboundError", "Settings", "__version__", "load_settings"]
