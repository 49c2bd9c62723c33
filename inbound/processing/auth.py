"""Sender verdicts: SPF, DKIM, DMARC and ARC for one message, and the Authentication-Results header.

Stage: called by the processor (``process.py``) once per message, before the
payloads are built, and by the SMTP edge for the policies that refuse mail
(``inbound/edge/authpolicy.py``, in a thread off the event loop).

Input: the message bytes and what the SMTP conversation said (client IP, MAIL
FROM, HELO). Output: :class:`Verdicts`, results named as RFC 8601 names them
(pass, fail, softfail, neutral, none, temperror, permerror).

The checks are the libraries': pyspf (SPF, RFC 7208), dkimpy (DKIM signatures
and the ARC chain, RFC 6376 / 8617) and publicsuffix2 (organisational domains),
with DNS from :mod:`.resolver`. DMARC -- reading the record, identifier
alignment and which policy applies (RFC 7489 6.3, 3.1, 6.6) -- is the few lines
of :func:`dmarc_tags` and :func:`dmarc_for`: authheaders' evaluation takes only
one DKIM result, reloads the public suffix list from disk on every call (45 ms,
measured) and lets DNS errors out as anything, and its record reader refuses a
whole record for a slip after its p= (below).

Why this shape: a message's first lookups are independent and known from its
headers (the SPF record, each signature's and ARC set's key, the DMARC
records), so those the cache lacks are fetched at once on a thread pool and
the message waits for the slowest, not for the sum. The checks themselves then
run one after another in the caller's thread, answered from the cache: they
are CPU work (hashes, RSA), which threads would only slow down under the GIL,
and a message whose records are cached hands nothing to another thread.
Failure behaviour: a DNS timeout or server failure is ``temperror`` for the
check that needed it; all lookups of a message share one deadline, ``[auth]
timeout``; a check that throws on hostile bytes is ``permerror``. Nothing
here raises.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TypeVar

import dkim
import dkim.crypto
import dkim.util
import spf
from publicsuffix2 import PublicSuffixList

from ..config import AuthSettings
from ..events import shown
from . import dkimcanon
from .resolver import DnsTemporaryError, MessageLookups, Resolver, bind_spf_lookups
from .verdicts import FAIL, NONE, PASS, PERMERROR, TEMPERROR, DkimVerdict, DmarcVerdict, SpfVerdict, Verdicts

log = logging.getLogger(__name__)
T = TypeVar("T")

dkimcanon.install()  # before any message is checked: dkimpy's own body canonicalization is quadratic

# Threads for prefetching, shared by every message: a few messages' lookups in flight at once.
POOL_THREADS = 16


class Authenticator:
    """Computes :class:`Verdicts`; one per process, shared by threads (the resolver cache is shared too)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.timeout = settings.timeout
        self.resolver = Resolver(settings.resolvers, settings.timeout)
        self.pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="auth-dns")
        _public_suffixes()  # read the list at start-up, not while the first message waits

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def lookups(self) -> MessageLookups:
        """A new message's lookups: its deadline starts now."""
        return MessageLookups(self.resolver, self.timeout)

    def verify(self, message: bytes, *, client_ip: str, mail_from: str, helo: str) -> Verdicts:
        """Every verdict of *message*; never raises (what cannot be checked is ``permerror``)."""
        unreadable = Verdicts(
            SpfVerdict(PERMERROR, _spf_domain(mail_from, helo)), (), DmarcVerdict(PERMERROR, None, None), PERMERROR
        )
        with dkimcanon.each_body_canonicalized_once():  # however many signatures hash it
            return _guarded(lambda: self._verify(message, client_ip, mail_from, helo), unreadable)

    def _verify(self, message: bytes, client_ip: str, mail_from: str, helo: str) -> Verdicts:
        verifier = _dkim_reader(message)
        headers: list[tuple[bytes, bytes]] = verifier.headers if verifier else []
        from_domains = from_header_domains(message)
        signatures = _signatures_to_verify(headers, from_domains)
        spf_domain = _spf_domain(mail_from, helo)
        arc_headers = [(name.lower(), value) for name, value in headers if name.lower().startswith(b"arc-")]
        arc_unchecked = _arc_verdict_unchecked(arc_headers, len(headers))
        keys = [_key_name(signature.tags) for signature in signatures if not signature.costly]
        keys += _arc_key_names(arc_headers) if arc_unchecked is None else []
        wanted = [(spf_domain, "TXT")] + [(name, "TXT") for name in keys if name]
        wanted += [(f"_dmarc.{d}", "TXT") for domain in from_domains for d in (domain, org_domain(domain))]
        lookups = self.lookups()  # the DNS deadline starts with the first lookup, not with the parsing above
        lookups.prefetch(self.pool, wanted)
        spf_verdict = self.check_spf(client_ip, mail_from, helo, lookups)
        dkims = tuple(self._check_dkim(verifier, signature, lookups) for signature in signatures) if verifier else ()
        arc = arc_unchecked or self._check_arc(message, lookups)
        dmarc = self._check_dmarc(from_domains, spf_verdict, dkims, lookups)
        return Verdicts(spf_verdict, dkims, dmarc, arc)

    def check_spf(self, client_ip: str, mail_from: str, helo: str, lookups: MessageLookups | None = None) -> SpfVerdict:
        lookups = lookups or self.lookups()
        left = max(lookups.deadline - time.monotonic(), 0.001)
        with bind_spf_lookups(lookups):
            result, _ = _guarded(
                lambda: spf.query(client_ip, mail_from, helo, querytime=left).check()[:2],
                (PERMERROR, ""),
            )
        return SpfVerdict(str(result), _spf_domain(mail_from, helo))

    def _check_dkim(self, verifier: dkim.DKIM, signature: _Signature, lookups: MessageLookups) -> DkimVerdict:
        if signature.costly:
            tags = signature.tags or {}
            return DkimVerdict(PERMERROR, _text(tags.get(b"d")), _text(tags.get(b"s")))
        index = signature.index

        def verify() -> str:
            try:
                verifier.verify_headerprep(idx=index)  # the signature's own syntax
            except dkim.DKIMException:
                return PERMERROR  # a signature that cannot be read (RFC 8601 2.7.1)
            try:
                return PASS if verifier.verify(idx=index, dnsfunc=functools.partial(_usable_key, lookups)) else FAIL
            except DnsTemporaryError:
                return TEMPERROR
            except UnusableKey:
                return PERMERROR  # as a key record that cannot be read
            except dkim.DKIMException:
                return FAIL  # e.g. the body hash does not match: changed after signing

        verifier.signature_fields = {}
        result = _guarded(verify, PERMERROR)
        fields = verifier.signature_fields or {}
        return DkimVerdict(result, _text(fields.get(b"d")), _text(fields.get(b"s")))

    def _check_arc(self, message: bytes, lookups: MessageLookups) -> str:
        def verify() -> str:
            try:
                chain, _, _ = dkim.ARC(message).verify(dnsfunc=functools.partial(_usable_key, lookups))
            except DnsTemporaryError:
                return TEMPERROR
            except (UnusableKey, dkim.DKIMException):
                return FAIL
            return FAIL if chain is None else str(chain.decode())  # None: a seal reported cv=fail

        return _guarded(verify, PERMERROR)

    def _check_dmarc(
        self, from_domains: list[str], spf_verdict: SpfVerdict, dkims: tuple[DkimVerdict, ...], lookups: MessageLookups
    ) -> DmarcVerdict:
        if not from_domains:
            return DmarcVerdict(PERMERROR, None, None)  # no From address: nothing to align with

        def record_of(domain: str) -> dict[str, str]:
            record = lookups.dmarc_record(f"_dmarc.{domain}")
            return dmarc_tags(record) if record else {}

        def evaluate(domain: str) -> DmarcVerdict:
            try:
                return dmarc_for(domain, spf_verdict, dkims, record_of)
            except DnsTemporaryError:
                return DmarcVerdict(TEMPERROR, None, domain)

        verdicts = [_guarded(functools.partial(evaluate, d), DmarcVerdict(PERMERROR, None, d)) for d in from_domains]
        # Several From domains (RFC 7489 6.6.1): the one whose failure weighs most speaks for the message.
        return max(verdicts, key=lambda v: (v.result == FAIL, _POLICY_WEIGHT.get(v.policy or "", 0)))


_POLICY_WEIGHT = {"none": 1, "quarantine": 2, "reject": 3}


def dmarc_tags(record: str) -> dict[str, str]:
    """The tags of a ``v=DMARC1`` record, names and values lower case (RFC 7489 6.3, 6.4).

    Read as 6.3 asks: "Syntax errors in the remainder of the record SHOULD be discarded". A part with
    no "=" or no name (a second rua URI after a ";", an empty "; ;", a bare "fo") is passed over and
    the record's p= still applies; authheaders refused such a record whole, and the spoofs of a
    p=reject domain that made the slip were permerror, unacted on. A tag given twice: the first.
    """
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if equals and name and name not in tags:
            tags[name] = value.strip().lower()
    return tags


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

    def any_aligned(result: str) -> bool:
        return (spf_verdict.result == result and aligned(spf_verdict.domain, record.get("aspf", "r"))) or any(
            d.result == result and aligned(d.domain, record.get("adkim", "r")) for d in dkims
        )

    if any_aligned(PASS):
        return DmarcVerdict(PASS, policy, domain)
    # An aligned identifier that could not be checked might have passed: not a failure to act on. One
    # that could never align says nothing, and its DNS is the sender's to break.
    if any_aligned(TEMPERROR):
        return DmarcVerdict(TEMPERROR, policy, domain)
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


# Characters of From fields read for their domains, in all. The stdlib reads an address list at about
# 2 us a character (a From field of 1 MiB took 2 s), and some shapes take the square of their length
# (a group holding 15,000 "@": 0.3 s; 4,000 of them: 0.02 s). A real From holds a few addresses.
MAX_FROM_LENGTH = 4096


# A From field's domains where it is past MAX_FROM_LENGTH, found in one linear pass: what follows
# each "@". Dropped instead, a display name of 4,100 characters made a spoof's DMARC permerror, which
# nothing acts on. Finding too many (one in a display name) is the safe way to be wrong: each
# domain's DMARC is evaluated, and the most demanding failure speaks for the message.
_ANY_DOMAIN = re.compile(r"@([^\s<>@,;:\"()\[\]]+)")


def from_header_domains(message: bytes) -> list[str]:
    """The distinct domains of the From header's addresses, lower case, in order.

    Fields up to MAX_FROM_LENGTH characters in all are read as address lists; the rest are scanned.
    """
    readable: list[str] = []
    scanned: list[str] = []
    length = 0
    for value in BytesHeaderParser().parsebytes(message).get_all("From", []):
        length += len(text := str(value))
        if length <= MAX_FROM_LENGTH:
            readable.append(text)
        else:
            scanned += _ANY_DOMAIN.findall(text)
    try:
        addresses = getaddresses(readable)
    except RecursionError:  # the stdlib reads nested groups (g:g:g: ...) by recursion
        addresses = []
    found = [address.rpartition("@")[2].strip().rstrip(">") for _, address in addresses if "@" in address]
    domains = [_printable(domain.lower()) for domain in [*found, *scanned]]
    return list(dict.fromkeys(d for d in domains if d))


# DKIM signatures verified a message. Each hashes the whole body again (dkimpy keeps no body hash
# between them), and anyone may add signatures and publish keys for them: 100 of them on a 1 MB
# body took 2.3 s of the process stage's CPU, a thousand ran until the DNS deadline. OpenDKIM's
# MaximumSignaturesToVerify is 3 by default; those of the From domain go first, so DMARC finds its own.
MAX_SIGNATURES = 5
# ARC sets a chain may hold. RFC 8617 5.2, step 1: "The maximum number of ARC Sets that can be
# attached to a message is 50. If more than the maximum number exist, the Chain Validation Status is
# 'fail'". dkimpy verifies every instance from the highest i= down, and each message signature
# hashes the body again: 330 sets on 8 MiB ran past the DNS deadline. A chain with an instance
# above 50 either holds more than 50 sets or has a gap, which fails as well (5.2, step 3), so it
# fails at once, unchecked, with no lookup.
MAX_ARC_SETS = 50
# Key names looked up ahead for ARC sets: two a set.
MAX_ARC_KEYS = 2 * MAX_ARC_SETS

# A signature's header list is matched against the message's fields a name at a time, and dkimpy
# scans the fields again for each name: 2,000 names against 20,000 fields took 2.3 s, and the 1 MiB
# header cap allows a hundred times that. Real signatures list a few dozen names, real messages
# have a few dozen fields; a signature past either limit is not verified (permerror).
MAX_SIGNED_NAMES = 100
MAX_HEADER_FIELDS = 1000
# Blanks (and line breaks) in a row in a signature field. dkimpy checks b= (twice) and splits h= with
# regexes that, on a run of blanks that ends the wrong way, try the run again from each of its blanks:
# 64 KB of spaces in b= took 9.7 s, in h= 6.2 s. Real signatures fold with a line break and a tab or
# a few spaces; a field with a longer run is not verified (permerror), so each run costs at most a
# few thousand steps.
MAX_BLANK_RUN = 64
_LONG_BLANK_RUN = re.compile(rb"\s{%d}" % (MAX_BLANK_RUN + 1))
# Lines of a header section dkimpy is given: it joins a field's continuation lines by copying the
# field each time, so one field of 200,000 lines took 3 s. Real header sections have a few hundred.
MAX_HEADER_LINES = 5000

# RSA keys dkimpy is given to verify with. Its RSA is pure Python and holds the GIL: a 16,384-bit
# modulus with an exponent as long took 7 s (32,768 bits: 53 s), whatever [auth] timeout says, and
# a key record may be 64 KB. OpenSSL's own bounds (OPENSSL_RSA_MAX_MODULUS_BITS, and
# OPENSSL_RSA_MAX_PUBEXP_BITS for a large modulus); real keys are 1,024-4,096 bits, exponent 65,537.
MAX_KEY_BITS = 16384
MAX_EXPONENT_BITS = 64

Tags = dict[bytes, bytes]


class UnusableKey(Exception):
    """A signature's key is larger than any real one: not verified (permerror), no RSA work done."""


def _usable_key(lookups: MessageLookups, name: bytes, timeout: float = 0) -> bytes | None:
    """dkimpy's ``dnsfunc``: the key record at *name*, refused with :class:`UnusableKey` if too large."""
    record = lookups.dkim_key(name, timeout)
    if record is not None and not _within_bounds(record):
        raise UnusableKey(f"{name!r}: an RSA key over {MAX_KEY_BITS} bits or its exponent over {MAX_EXPONENT_BITS}")
    return record


@functools.lru_cache(maxsize=64)  # a signer's key, checked once for all its mail
def _within_bounds(record: bytes) -> bool:
    try:
        tags = dkim.util.parse_tag_value(record)
        if tags.get(b"k", b"rsa") != b"rsa":
            return True  # ed25519: one size
        key = dkim.crypto.parse_public_key(base64.b64decode(tags[b"p"]))
    except Exception:  # noqa: BLE001 -- a record dkimpy cannot read: its own checks say so, with no RSA work
        return True
    modulus: int = key["modulus"]
    exponent: int = key["publicExponent"]
    return modulus.bit_length() <= MAX_KEY_BITS and exponent.bit_length() <= MAX_EXPONENT_BITS


def _dkim_reader(message: bytes) -> dkim.DKIM | None:
    """dkimpy's reading of *message*; None (as if unsigned) if it cannot split the header section
    (a line without a colon) or the section has more lines than any real one."""
    end = message.find(b"\r\n\r\n")
    if message.count(b"\n", 0, end if end >= 0 else len(message)) > MAX_HEADER_LINES:
        return None
    try:
        return dkim.DKIM(message)
    except dkim.DKIMException:
        return None


@dataclass(frozen=True, slots=True)
class _Signature:
    index: int  # among the message's DKIM-Signature fields
    tags: Tags | None  # None: unreadable
    costly: bool  # not verified (permerror): see _costly


def _costly(value: bytes, tags: Tags | None, field_count: int) -> bool:
    """Whether verifying a signature field (DKIM, or an ARC set's message signature or seal) would cost
    more than any real one. One with a run of blanks past MAX_BLANK_RUN does, readable or not; another
    that cannot be read (*tags* None) costs nothing: its check fails on its syntax."""
    if _LONG_BLANK_RUN.search(value):
        return True
    if tags is None:
        return False
    return field_count > MAX_HEADER_FIELDS or tags.get(b"h", b"").count(b":") + 1 > MAX_SIGNED_NAMES


def _tags(value: bytes) -> Tags | None:
    try:
        tags: Tags = dkim.util.parse_tag_value(re.sub(rb"\s+", b"", value))
    except dkim.util.InvalidTagValueList:
        return None  # unreadable: its check says so, without a lookup
    return tags


def _signatures_to_verify(headers: list[tuple[bytes, bytes]], from_domains: list[str]) -> list[_Signature]:
    """The DKIM signatures to verify, in header order: at most MAX_SIGNATURES, those whose domain aligns
    with a From domain first."""
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    if len(headers) > MAX_HEADER_FIELDS:
        values = values[:MAX_SIGNATURES]  # none will be verified (_costly): no need to read them all
    signatures = [_tags(value) for value in values]
    from_orgs = {org_domain(domain) for domain in from_domains}

    def aligned(index: int) -> bool:
        tags = signatures[index]
        return tags is not None and b"d" in tags and org_domain(_text(tags[b"d"])) in from_orgs

    chosen = sorted(range(len(signatures)), key=lambda index: not aligned(index))[:MAX_SIGNATURES]
    return [
        _Signature(index, signatures[index], _costly(values[index], signatures[index], len(headers)))
        for index in sorted(chosen)
    ]


def _key_name(tags: Tags | None) -> str | None:
    """Where the key of a signature or an ARC set is published (``s._domainkey.d``)."""
    try:
        return f"{tags[b's'].decode()}._domainkey.{tags[b'd'].decode()}" if tags else None
    except (KeyError, UnicodeDecodeError):
        return None


def _arc_key_names(arc_headers: list[tuple[bytes, bytes]]) -> list[str]:
    """Where the keys of the ARC sets are published, from the ARC headers (names in lower case)."""
    names: dict[str, None] = {}
    for name, value in arc_headers:
        if len(names) == MAX_ARC_KEYS:
            break
        if name in (b"arc-message-signature", b"arc-seal") and (key := _key_name(_tags(value))):
            names[key] = None
    return list(names)


def _arc_verdict_unchecked(arc_headers: list[tuple[bytes, bytes]], field_count: int) -> str | None:
    """The ARC verdict of a message whose chain is not given to dkimpy, or None if it must be checked."""
    if not arc_headers:
        return NONE  # spares dkimpy a second parse
    if any(_past_the_last_arc_set(value) for _, value in arc_headers):
        return FAIL  # RFC 8617 5.2, step 1
    if field_count > MAX_HEADER_FIELDS or any(
        _costly(value, _tags(value), field_count)
        for name, value in arc_headers
        if name in (b"arc-message-signature", b"arc-seal")
    ):
        return PERMERROR
    return None


def _past_the_last_arc_set(value: bytes) -> bool:
    """Whether an ARC header field's instance (i=, found as dkimpy finds it) is above MAX_ARC_SETS."""
    found = dkim.ARC.INSTANCE_RE.search(value)
    digits = found.group(1).lstrip(b"0") if found else b""
    # The length first: i= may hold any number of digits, and int() refuses more than 4,300.
    return len(digits) > len(str(MAX_ARC_SETS)) or int(digits or b"0") > MAX_ARC_SETS


_NOT_IN_A_NAME = re.compile(r"[^a-z0-9._-]")


def _spf_domain(mail_from: str, helo: str) -> str:
    return _printable(mail_from.rpartition("@")[2].lower() if mail_from else helo.lower())


def _text(value: bytes | None) -> str:
    """A tag's value (a domain, a selector) as the verdicts report it: what a domain name may hold (letters,
    digits, dot, hyphen; underscore, seen in selectors), anything else U+FFFD, cut as the activity log cuts text.

    Our Authentication-Results quotes a value only for some characters: a selector of
    ``a@b dkim=pass header.d=bank.example`` went in unquoted, a clause of the sender's on our line.
    """
    return shown(_NOT_IN_A_NAME.sub("\ufffd", value.decode("ascii", errors="replace").lower())) if value else ""


def _printable(text: str) -> str:
    """*text* with each character that is not printable (a control, a line or paragraph separator) as U+FFFD.

    The sender writes the domains and selectors the verdicts report, and our own Authentication-Results
    header carries them: dkimpy splits a signature's lines on LF, so a bare CR in its s= would end our
    header there for a reader that splits on CR, and start one the sender wrote."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)


def _guarded(check: Callable[[], T], on_crash: T) -> T:
    try:
        return check()
    except Exception:  # the libraries throw anything on hostile bytes: that message's permerror, logged
        log.warning("stage=process auth check crashed on a message", exc_info=True)
        return on_crash
