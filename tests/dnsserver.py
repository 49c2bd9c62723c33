"""A small authoritative DNS server on loopback (UDP and TCP), built on dnspython's wire format.

The auth tests publish SPF, DKIM and DMARC TXT records here and point
``[auth] resolvers`` at it. ``silent=True`` makes a server that reads every
query and never answers, for the timeout cases; ``delay`` makes every answer
take that long, as a resolver's cache misses do (the bench). It counts the queries it
answered, so a test can see the resolver cache at work.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

NEGATIVE_TTL = 300


class DnsServer:
    def __init__(self, *, silent: bool = False, ttl: int = 300, delay: float = 0.0) -> None:
        self.silent = silent
        self.delay = delay
        self.ttl = ttl
        self.zone: dict[tuple[str, str], list[str]] = {}
        self.failing: set[str] = set()  # names answered with SERVFAIL, as a broken authoritative server does
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                length = int.from_bytes(self.request.recv(2), "big")
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data)
                if reply is not None:
                    self.request.sendall(len(reply).to_bytes(2, "big") + reply)

        for _ in range(20):  # a free UDP port whose TCP twin is free too
            self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            self.port = self.udp.server_address[1]
            try:
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError:
                self.udp.server_close()
        else:
            raise OSError("no loopback port free for both UDP and TCP")
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()

    def txt(self, name: str, *values: str) -> None:
        """Publish TXT records at *name* (each value one record; long ones are split into strings)."""
        self.add(name, "TXT", [_quoted(v) for v in values])

    def add(self, name: str, rdtype: str, values: Iterable[str]) -> None:
        with self.lock:
            self.zone.setdefault((name.lower().rstrip("."), rdtype), []).extend(values)

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.queries.append((name, rdtype))
            values = list(self.zone.get((name, rdtype), []))
            exists = any(n == name for n, _ in self.zone)
        if self.silent:
            return None
        time.sleep(self.delay)  # each query has a thread of its own: delays overlap, as on a real resolver
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif values:
            response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, values))
        else:
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = f"ns.test. hostmaster.test. 1 3600 600 86400 {NEGATIVE_TTL}"
            response.authority.append(dns.rrset.from_text("test.", NEGATIVE_TTL, "IN", "SOA", soa))
        return bytes(response.to_wire())


def _quoted(value: str) -> str:
    """A TXT value in zone-file form: 255-byte strings, quoted."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
