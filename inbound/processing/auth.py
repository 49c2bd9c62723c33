"""Sender verdicts: SPF, DKIM, DMARC and ARC for one message, and the Authentication-Results header.

Stage: called by the processor (``process.py``) once per message, before the
payloads are built, and by the SMTP edge for the policies that refuse mail
(``inbound/edge/authpolicy.py``, in a thread off the event loop).

Input: the message bytes and what the SMTP conversation said (client IP, MAIL
FROM, HELO). Output: :class:`Verdicts`, results named as RFC 8601 names them
(pass, fail, softfail, neutral, none, temperror, permerror).

The checks are the libraries': pyspf (SPF, RFC 7208), dkimpy (DKIM signatures
and the ARC chain, RFC 6376 / 8617), authheaders (DMARC record discovery and
parsing) and publicsuffix2 (organisational domains), with DNS from
:mod:`.resolver`. DMARC's last step -- identifier alignment and which policy
applies (RFC 7489 3.1, 6.6) -- is the few lines in :func:`dmarc_for`, because
authheaders' own evaluation takes only one DKIM result, reloads the public
suffix list from disk on every call (45 ms, measured) and lets DNS errors out
as anything.

Why concurrently: a message's lookups are independent (SPF's chain, each
signature's key, the ARC keys, the DMARC record), so they run on a thread
pool and the message waits for the slowest, not for the sum. DMARC then
evaluates from the cache. Failure behaviour: a DNS timeout or server failure
is ``temperror`` for the check that needed it; the whole message is bounded
by ``[auth] timeout`` (a check still running then is ``temperror``); a check
that throws on hostile bytes is ``permerror``. Nothing here raises.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, TypeVar

import dkim
import spf
from authheaders.dmarc_lookup import DMARCException, lookup_receiver_record
from authres import AuthenticationResultsHeader, DKIMAuthenticationResult, SPFAuthenticationResult
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from publicsuffix2 import PublicSuffixList

from ..config import AuthSettings
from .resolver import DnsTemporaryError, Resolver, bind_spf_lookups

log = logging.getLogger(__name__)
T = TypeVar("T")

PASS, FAIL, NONE, TEMPERROR, PERMERROR = "pass", "fail", "none", "temperror", "permerror"
# Threads shared by every message: a few messages' lookups in flight at once.
POOL_THREADS = 16


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    result: str
    domain: str  # the MAIL FROM domain, or the HELO name for the null sender


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    result: str
    domain: str  # d=
    selector: str  # s=


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    result: str
    policy: str | None  # the policy that applies to the From domain (p=, or sp= for a subdomain)
    domain: str | None  # the From domain


@dataclass(frozen=True, slots=True)
class Verdicts:
    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict
    arc: str

    def as_json(self) -> dict[str, Any]:
        """The payload's ``auth`` object (schemas/inbound-message.schema.json)."""
        return {
            "spf": {"result": self.spf.result, "domain": self.spf.domain},
            "dkim": [{"result": d.result, "domain": d.domain, "selector": d.selector} for d in self.dkim],
            "dmarc": {"result": self.dmarc.result, "policy": self.dmarc.policy, "domain": self.dmarc.domain},
            "arc": {"result": self.arc},
        }

    def header_value(self, authserv_id: str) -> str:
        """The value of our ``Authentication-Results:`` header (RFC 8601), formatted by authres."""
        results: list[Any] = [SPFAuthenticationResult(result=self.spf.result, smtp_mailfrom=self.spf.domain or None)]
        results += [
            DKIMAuthenticationResult(result=d.result, header_d=d.domain or None, header_s=d.selector or None)
            for d in self.dkim
        ] or [DKIMAuthenticationResult(result=NONE)]
        results.append(
            DMARCAuthenticationResult(result=self.dmarc.result, header_from=self.dmarc.domain, policy=self.dmarc.policy)
        )
        results.append(ARCAuthenticationResult(result=self.arc))
        return str(AuthenticationResultsHeader(authserv_id=authserv_id, results=results).header_value())

    @property
    def dmarc_rejects(self) -> bool:
        """The From domain asks receivers to reject mail that fails DMARC, and this one does."""
        return self.dmarc.result == FAIL and self.dmarc.policy == "reject"


def claims(header_value: str, authserv_id: str) -> bool:
    """Whether an Authentication-Results value says it is from *authserv_id* (then, arriving from outside, forged)."""
    try:
        found = str(AuthenticationResultsHeader.parse_value(header_value).authserv_id)
    except Exception:  # noqa: BLE001 -- authres raises its own and stdlib errors on junk; read the id by hand then
        found = header_value.split(";", 1)[0].strip()
    return found.lower() == authserv_id.lower()


class Authenticator:
    """Computes :class:`Verdicts`; one per process, shared by threads (the resolver cache is shared too)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.timeout = settings.timeout
        self.resolver = Resolver(settings.resolvers, settings.timeout)
        self.pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="auth")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def verify(self, message: bytes, *, client_ip: str, mail_from: str, helo: str) -> Verdicts:
        signatures = _count_dkim_signatures(message)
        from_domains = from_header_domains(message)
        spf_job = self.pool.submit(self.check_spf, client_ip, mail_from, helo)
        dkim_jobs = [self.pool.submit(self.check_dkim, message, i) for i in range(signatures)]
        arc_job = self.pool.submit(self.check_arc, message)
        # Warms the cache so DMARC below evaluates without waiting on the network.
        warm = [self.pool.submit(self._dmarc_records, d) for d in from_domains]
        jobs: list[Future[Any]] = [spf_job, *dkim_jobs, arc_job, *warm]
        wait_all(jobs, timeout=self.timeout)
        spf_verdict = _outcome(spf_job, SpfVerdict(TEMPERROR, _spf_domain(mail_from, helo)))
        dkims = tuple(_outcome(job, DkimVerdict(TEMPERROR, "", "")) for job in dkim_jobs)
        arc = _outcome(arc_job, TEMPERROR)
        if all(job.done() for job in warm):
            dmarc = self.check_dmarc(from_domains, spf_verdict, dkims)
        else:
            dmarc = DmarcVerdict(TEMPERROR, None, from_domains[0] if from_domains else None)
        return Verdicts(spf_verdict, dkims, dmarc, arc)

    def check_spf(self, client_ip: str, mail_from: str, helo: str) -> SpfVerdict:
        domain = _spf_domain(mail_from, helo)
        with bind_spf_lookups(self.resolver):
            result, _ = _guarded(
                lambda: spf.query(client_ip, mail_from, helo, querytime=self.timeout).check()[:2],
                (PERMERROR, ""),
            )
        return SpfVerdict(str(result), domain)

    def check_dkim(self, message: bytes, index: int) -> DkimVerdict:
        verifier = dkim.DKIM(message)

        def verify() -> str:
            try:
                verifier.verify_headerprep(idx=index)  # the signature's own syntax
            except dkim.DKIMException:
                return PERMERROR  # a signature that cannot be read (RFC 8601 2.7.1)
            try:
                return PASS if verifier.verify(idx=index, dnsfunc=self.resolver.dkim_key) else FAIL
            except DnsTemporaryError:
                return TEMPERROR
            except dkim.DKIMException:
                return FAIL  # e.g. the body hash does not match: changed after signing

        result = _guarded(verify, PERMERROR)
        fields = verifier.signature_fields or {}
        return DkimVerdict(result, _text(fields.get(b"d")), _text(fields.get(b"s")))

    def check_arc(self, message: bytes) -> str:
        def verify() -> str:
            try:
                chain, _, _ = dkim.ARC(message).verify(dnsfunc=self.resolver.dkim_key)
            except DnsTemporaryError:
                return TEMPERROR
            except dkim.DKIMException:
                return FAIL
            return FAIL if chain is None else str(chain.decode())  # None: a seal reported cv=fail

        return _guarded(verify, PERMERROR)

    def check_dmarc(
        self, from_domains: list[str], spf_verdict: SpfVerdict, dkims: Iterable[DkimVerdict]
    ) -> DmarcVerdict:
        if not from_domains:
            return DmarcVerdict(PERMERROR, None, None)  # no From address: nothing to align with
        verdicts = [self._dmarc_for(d, spf_verdict, tuple(dkims)) for d in from_domains]
        # Several From domains (RFC 7489 6.6.1): the one whose failure weighs most speaks for the message.
        return max(verdicts, key=lambda v: (v.result == FAIL, _POLICY_WEIGHT.get(v.policy or "", 0)))

    def _dmarc_records(self, domain: str) -> None:
        self._dmarc_record(domain)
        self._dmarc_record(org_domain(domain))

    def _dmarc_record(self, domain: str) -> dict[str, str]:
        return dict(lookup_receiver_record(domain, dnsfunc=self.resolver.dmarc_record))

    def _dmarc_for(self, domain: str, spf_verdict: SpfVerdict, dkims: tuple[DkimVerdict, ...]) -> DmarcVerdict:
        def evaluate() -> DmarcVerdict:
            try:
                return dmarc_for(domain, spf_verdict, dkims, self._dmarc_record)
            except DnsTemporaryError:
                return DmarcVerdict(TEMPERROR, None, domain)
            except DMARCException:
                return DmarcVerdict(PERMERROR, None, domain)

        return _guarded(evaluate, DmarcVerdict(PERMERROR, None, domain))


_POLICY_WEIGHT = {"none": 1, "quarantine": 2, "reject": 3}


def dmarc_for(
    domain: str,
    spf_verdict: SpfVerdict,
    dkims: tuple[DkimVerdict, ...],
    record_of: Callable[[str], dict[str, str]],
) -> DmarcVerdict:
    """DMARC for From *domain*: policy discovery (RFC 7489 6.6.3) and identifier alignment (3.1)."""
    organisation = org_domain(domain)
    record = record_of(domain)
    inherited = not record and organisation != domain
    if inherited:
        record = record_of(organisation)
    if not record:
        return DmarcVerdict(NONE, None, domain)
    policy = record.get("sp", record.get("p")) if inherited else record.get("p")
    if policy not in _POLICY_WEIGHT:
        return DmarcVerdict(PERMERROR, None, domain)

    def aligned(identifier: str, mode: str) -> bool:
        identifier = identifier.lower()
        return identifier == domain if mode == "s" else org_domain(identifier) == organisation

    passed = (spf_verdict.result == PASS and aligned(spf_verdict.domain, record.get("aspf", "r"))) or any(
        d.result == PASS and aligned(d.domain, record.get("adkim", "r")) for d in dkims
    )
    if passed:
        return DmarcVerdict(PASS, policy, domain)
    if spf_verdict.result == TEMPERROR or any(d.result == TEMPERROR for d in dkims):
        return DmarcVerdict(TEMPERROR, policy, domain)  # it might have passed: not a failure to act on
    return DmarcVerdict(FAIL, policy, domain)


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 3.2): the public suffix plus one label.

    A name under a TLD the list does not know (``.test``, a new one) gets the
    list's default rule ``*`` (the TLD is the suffix); publicsuffix2 answers
    the bare TLD there instead, hence the fallback.
    """
    domain = domain.lower().rstrip(".")
    found = _public_suffixes().get_sld(domain)
    return str(found) if found and "." in found else ".".join(domain.split(".")[-2:])


def from_header_domains(message: bytes) -> list[str]:
    """The distinct domains of the From header's addresses, lower case, in order."""
    headers = BytesHeaderParser().parsebytes(message)
    addresses = getaddresses([str(v) for v in headers.get_all("From", [])])
    domains = [address.rpartition("@")[2].strip().lower().rstrip(">") for _, address in addresses if "@" in address]
    return list(dict.fromkeys(d for d in domains if d))


def _count_dkim_signatures(message: bytes) -> int:
    headers, _ = dkim.rfc822_parse(message)
    return sum(1 for name, _ in headers if name.lower() == b"dkim-signature")


def _spf_domain(mail_from: str, helo: str) -> str:
    return mail_from.rpartition("@")[2].lower() if mail_from else helo.lower()


def _text(value: bytes | None) -> str:
    return value.decode("ascii", errors="replace").lower() if value else ""


def _outcome(job: Future[T], unfinished: T) -> T:
    """The job's result, or *unfinished* when the message's time ran out first."""
    return job.result() if job.done() else unfinished


def _guarded(check: Callable[[], T], on_crash: T) -> T:
    try:
        return check()
    except Exception:  # the libraries throw anything on hostile bytes: that message's permerror, logged
        log.warning("stage=process auth check crashed on a message", exc_info=True)
        return on_crash
