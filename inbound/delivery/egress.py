"""The connections webhook POSTs travel on: checked addresses, one deadline per attempt.

Every webhook URL is the customer's (or an attacker's) choice, so the HTTP
transport the deliverer POSTs on (deliveries and alerts alike) is built here
and nowhere else:

* **Checked at connect time.** The host is resolved once (``resolve``, injected
  so tests control it) and, unless ``webhooks.allow_private``, the connection
  is refused if *any* address is not public (:func:`inbound.netpolicy.is_public`).
  The socket then goes to the address that was checked -- never a second
  lookup a rebinding DNS server could answer differently -- while TLS still
  sends and verifies the host *name* (SNI, certificate; ``webhooks.ca_file``
  for a private CA).
* **One deadline per attempt.** httpx's timeouts apply per read, so an endpoint
  sending a byte a second would hold an attempt forever; every name lookup,
  connect, read and write here is cut at the attempt's deadline
  (:func:`attempt_deadline`).
* No proxies from the environment (they would make the connection, unchecked),
  and redirects are never followed (:mod:`.webhook` POSTs on the transport,
  which follows none, and records a 3xx as a failure).

The check is a custom httpcore network backend, the hook httpcore offers for
exactly this; httpx's transport is given a pool that uses it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpcore
import httpx

from ..netpolicy import IPAddress, ip_of, is_loopback_name, is_public

#: host, port -> the addresses it resolves to (a test passes its own).
Resolver = Callable[[str, int], list[str]]

_deadline: ContextVar[float | None] = ContextVar("attempt_deadline", default=None)

# Idle connections kept for the next POST, and how long: enough for a few dozen busy streams to
# reuse theirs, while the connections a burst or a since-removed stream opened are closed.
IDLE_CONNECTIONS = 100
IDLE_EXPIRY = 30.0


class AddressRefused(Exception):
    """The webhook's host is, or resolves to, an address it may not reach."""


def system_resolver(host: str, port: int) -> list[str]:
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Every network operation inside ends by *seconds* from now (connect, headers and body alike)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _left() -> float | None:
    """Seconds left before the attempt's deadline (0 once it has passed); None outside an attempt."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _bounded(timeout: float | None) -> float | None:
    """*timeout* cut to what is left of the attempt's deadline; a timeout error once none is left."""
    left = _left()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


def _resolved_in_time(resolve: Resolver, host: str, port: int) -> list[str]:
    """*resolve* (host, port), waited for no longer than the attempt's deadline.

    getaddrinfo takes no timeout, and a slow name server would hold the attempt past
    ``webhooks.timeout`` and past its lease. So the lookup runs on a thread of its own, left behind
    at the deadline to end when the resolver gives up. Its own thread, not a pool's: lookups stuck
    on one customer's name server must not make everyone else's wait for a place.
    """
    lookup: Future[list[str]] = Future()

    def run() -> None:
        try:
            lookup.set_result(resolve(host, port))
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting attempt, which re-raises it
            lookup.set_exception(exc)

    threading.Thread(target=run, name=f"resolve-{host}", daemon=True).start()
    try:
        return lookup.result(timeout=_left())
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"cannot resolve {host}: no answer before the attempt's deadline") from None


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve once, check every address, connect to a checked one."""

    def __init__(self, resolve: Resolver = system_resolver, *, allow_private: bool = False) -> None:
        self.resolve = resolve
        self.allow_private = allow_private
        self.inner = httpcore.SyncBackend()

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        if is_loopback_name(host) and not self.allow_private:
            raise AddressRefused(f"{host} is loopback (webhooks.allow_private is false)")
        literal = ip_of(host)  # ValueError for a host that is neither a name nor an address
        if literal is not None:
            found = [literal]
        else:
            try:
                found = [ip for ip in map(ip_of, _resolved_in_time(self.resolve, host, port)) if ip is not None]
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
            if not found:
                raise httpcore.ConnectError(f"{host} resolves to no address")
        refused = [ip for ip in found if not is_public(ip)]
        if refused and not self.allow_private:
            raise AddressRefused(
                f"{host} is {', '.join(map(str, refused))}: not a public address (webhooks.allow_private is false)"
            )
        return found

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in self.addresses(host, port):
            try:
                stream = self.inner.connect_tcp(str(ip), port, _bounded(timeout), local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next checked address, as getaddrinfo's callers do
                continue
            return _DeadlineStream(stream)
        assert failure is not None  # addresses() returns at least one
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise AddressRefused("webhooks do not go to unix sockets")


def webhook_transport(
    *,
    allow_private: bool,
    ca_file: Path | None = None,
    resolve: Resolver = system_resolver,
) -> httpx.HTTPTransport:
    """The one transport deliveries and alerts go out on: guarded connections, no proxies."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else httpx.create_ssl_context()
    transport = httpx.HTTPTransport(verify=context, trust_env=False)
    # httpx takes no network backend of its own; its transport is a thin layer over this pool.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=context,
        network_backend=GuardedBackend(resolve, allow_private=allow_private),
        # Every stream POSTs on this pool, and each already bounds its own attempts
        # (webhooks.concurrency_per_stream): a bound here, shared, would let a few hanging endpoints
        # take every connection and time out a healthy stream's attempts while they wait for one.
        max_connections=None,
        max_keepalive_connections=IDLE_CONNECTIONS,
        keepalive_expiry=IDLE_EXPIRY,
    )
    return transport
