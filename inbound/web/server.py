"""Serves the HTTP API from inside ``inbound serve`` (role ``api``), as one more stage.

uvicorn runs the app on a thread of its own with its own event loop: the
handlers block on the store and the bus anyway, and on a thread uvicorn
leaves the process's signal handlers alone, so SIGTERM still reaches the
service's orderly shutdown, which stops this stage like any other. The socket
is bound when the service is built, before any stage starts, so a port in use
stops ``inbound serve`` with an error instead of leaving a dead thread.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from .api import create_app
from .backends import Backends

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's own default


class ApiServer:
    def __init__(self, backends: Backends) -> None:
        http = backends.settings.http
        config = uvicorn.Config(create_app(backends), log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._bind(http.host, http.port)]},
                                       name="api", daemon=True)  # fmt: skip

    def _bind(self, host: str, port: int) -> socket.socket:
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)  # from now on connections wait for uvicorn instead of being refused
        except OSError:
            self.socket.close()
            raise
        return self.socket

    def start(self) -> None:
        self.thread.start()
        log.info("api listening on http://%s:%d", *self.socket.getsockname()[:2])

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()
