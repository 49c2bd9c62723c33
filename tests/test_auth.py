"""Sender verdicts against a real DNS server on loopback, with mail signed at test time.

The DNS server is a thread of this process (tests/dnsserver.py) but a real
UDP/TCP server, hence these tests are e2e.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Iterator
from dataclasses import replace

import dkim
import pytest
from aiosmtpd.smtp import Envelope as SMTPEnvelope

from inbound.config import AuthSettings, StreamSettings
from inbound.edge.authpolicy import SPF_REFUSAL, SmtpAuthPolicy
from inbound.events import SHOWN_LENGTH
from inbound.processing.auth import Authenticator, from_header_domains
from inbound.processing.verdicts import Verdicts, claims
from tests.dnsserver import DnsServer
from tests.harness import SECRET
from tests.mailauth import SIGNED_HEADERS, SenderDomain, message

pytestmark = pytest.mark.e2e

SENDER_IP = "192.0.2.10"
OTHER_IP = "198.51.100.7"


@pytest.fixture
def example_org(dns_server: DnsServer) -> SenderDomain:
    return (
        SenderDomain(dns_server, "example.org")
        .spf(f"v=spf1 ip4:{SENDER_IP} -all")
        .dmarc("v=DMARC1; p=reject; rua=mailto:d@example.org")
    )


@pytest.fixture
def auth(dns_server: DnsServer) -> Iterator[Authenticator]:
    authenticator = Authenticator(AuthSettings(True, (("127.0.0.1", dns_server.port),), 5.0))
    yield authenticator
    authenticator.close()


def verify(auth: Authenticator, raw: bytes, ip: str = SENDER_IP, mail_from: str = "alice@example.org") -> Verdicts:
    return auth.verify(raw, client_ip=ip, mail_from=mail_from, helo="mail.example.org")


def test_signed_mail_from_an_authorised_server_passes_everything(
    auth: Authenticator, example_org: SenderDomain
) -> None:
    verdicts = verify(auth, example_org.sign(message()))
    assert verdicts.as_json() == {
        "spf": {"result": "pass", "domain": "example.org"},
        "dkim": [{"result": "pass", "domain": "example.org", "selector": "s1"}],
        "dmarc": {"result": "pass", "policy": "reject", "domain": "example.org"},
        "arc": {"result": "none"},
    }
    header = verdicts.header_value("mx.in.test")
    assert header.startswith("mx.in.test; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org")
    assert "dmarc=pass header.from=example.org policy.dmarc=reject" in header
    assert claims(header, "MX.in.test")


def test_spoof_from_another_server_fails_spf_and_dmarc(auth: Authenticator, example_org: SenderDomain) -> None:
    verdicts = verify(auth, message(), ip=OTHER_IP)
    assert verdicts.spf.result == "fail"
    assert verdicts.dkim == ()
    assert (verdicts.dmarc.result, verdicts.dmarc.policy) == ("fail", "reject")
    assert verdicts.dmarc_rejects


def test_a_body_changed_in_transit_fails_dkim_but_aligned_spf_passes_dmarc(
    auth: Authenticator, example_org: SenderDomain
) -> None:
    tampered = example_org.sign(message()).replace(b"Hi there", b"Pay me")
    verdicts = verify(auth, tampered)
    assert [d.result for d in verdicts.dkim] == ["fail"]
    assert verdicts.spf.result == "pass"
    assert verdicts.dmarc.result == "pass"


def test_softfail_neutral_and_no_records(dns_server: DnsServer, auth: Authenticator) -> None:
    SenderDomain(dns_server, "soft.example").spf("v=spf1 ~all")
    SenderDomain(dns_server, "neutral.example").spf("v=spf1 ?all").dmarc("v=DMARC1; p=quarantine")
    soft = verify(auth, message("bob@soft.example"), mail_from="bob@soft.example")
    assert (soft.spf.result, soft.dmarc.result, soft.dmarc.policy) == ("softfail", "none", None)
    neutral = verify(auth, message("bob@neutral.example"), mail_from="bob@neutral.example")
    assert (neutral.spf.result, neutral.dmarc.result, neutral.dmarc.policy) == ("neutral", "fail", "quarantine")
    nothing = verify(auth, message("carol@nowhere.example"), mail_from="carol@nowhere.example")
    assert (nothing.spf.result, nothing.dmarc.result) == ("none", "none")


def test_a_subdomain_gets_the_organisation_s_subdomain_policy(dns_server: DnsServer, auth: Authenticator) -> None:
    SenderDomain(dns_server, "corp.example").dmarc("v=DMARC1; p=none; sp=reject")
    verdicts = verify(auth, message("x@news.corp.example"), ip=OTHER_IP, mail_from="x@news.corp.example")
    assert (verdicts.dmarc.result, verdicts.dmarc.policy, verdicts.dmarc.domain) == (
        "fail",
        "reject",
        "news.corp.example",
    )


def test_a_forwarded_message_with_a_valid_arc_chain(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    lists = SenderDomain(dns_server, "lists.example.net").spf(f"v=spf1 ip4:{OTHER_IP} -all")
    original = example_org.sign(message())
    # The list tags the subject, which breaks the author's signature, and seals what it verified.
    forwarded = lists.arc_seal(
        original.replace(b"Subject: Hello", b"Subject: [list] Hello"),
        "spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org; dmarc=pass header.from=example.org",
    )
    verdicts = verify(auth, forwarded, ip=OTHER_IP, mail_from="list-bounces@lists.example.net")
    assert verdicts.arc == "pass"
    assert [d.result for d in verdicts.dkim] == ["fail"]
    assert verdicts.dmarc.result == "fail"  # the chain is reported; the policy decides what to trust

    broken = forwarded.replace(b"Hi there", b"Changed after sealing")
    assert verify(auth, broken, ip=OTHER_IP, mail_from="list-bounces@lists.example.net").arc == "fail"


def test_a_few_signatures_are_verified_and_the_from_domain_s_go_first(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    """Each signature hashes the body again and anyone may add them: the count verified is capped."""
    signed = example_org.sign(message())  # the author's signature, then twenty others above it
    for n in range(20):
        signed = SenderDomain(dns_server, "relay.example.net", selector=f"r{n}", key="relay").sign(signed)
    verdicts = verify(auth, signed)
    checked = [(d.selector, d.result) for d in verdicts.dkim]
    assert checked == [("r19", "pass"), ("r18", "pass"), ("r17", "pass"), ("r16", "pass"), ("s1", "pass")]
    assert verdicts.dkim[-1].domain == "example.org"
    assert verdicts.dmarc.result == "pass"
    key_lookups = {name for name, _ in dns_server.queries if "._domainkey." in name}
    assert key_lookups == {f"r{n}._domainkey.relay.example.net" for n in (16, 17, 18, 19)} | {
        "s1._domainkey.example.org"
    }


@pytest.mark.parametrize(
    ("signed_names", "fields", "result"),
    [(100, 20, "pass"), (101, 20, "permerror"), (10, 1000, "pass"), (10, 1001, "permerror")],
)
def test_a_signature_costlier_to_check_than_any_real_one_is_not_verified(
    *,
    dns_server: DnsServer,
    auth: Authenticator,
    example_org: SenderDomain,
    signed_names: int,
    fields: int,
    result: str,
) -> None:
    """dkimpy matches a signature's header names against the fields one name at a time: the product is capped."""
    plain = message()
    filler = fields - len(dkim.DKIM(plain).headers) - 1  # the signature is a field too
    plain = b"".join(b"X-Filler-%d: x\r\n" % n for n in range(filler)) + plain
    names = SIGNED_HEADERS + [b"x-absent-%d" % n for n in range(signed_names - len(SIGNED_HEADERS))]
    signed = dkim.sign(plain, b"s1", b"example.org", example_org.private_key, include_headers=names) + plain
    assert len(dkim.DKIM(signed).headers) == fields
    verdicts = verify(auth, signed)
    assert [(d.result, d.domain, d.selector) for d in verdicts.dkim] == [(result, "example.org", "s1")]
    looked_up = any("._domainkey." in name for name, _ in dns_server.queries)
    assert looked_up == (result == "pass")  # nothing is asked for a signature that is not checked


@pytest.mark.parametrize(("blanks", "result"), [(64, "pass"), (65, "permerror")])
def test_a_signature_with_a_run_of_blanks_longer_than_any_real_one_is_not_verified(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain, blanks: int, result: str
) -> None:
    """dkimpy checks b= and splits h= with regexes quadratic in a run of blanks; verifying ignores b='s blanks."""
    signed = example_org.sign(message()).replace(b"\r\n b=", b"\r\n b=" + b" " * blanks, 1)
    assert [d.result for d in verify(auth, signed).dkim] == [result]
    looked_up = any("._domainkey." in name for name, _ in dns_server.queries)
    assert looked_up == (result == "pass")  # nothing is asked for a signature that is not checked


@pytest.mark.parametrize(("blanks", "result"), [(64, "pass"), (65, "permerror")])
def test_an_arc_seal_with_a_run_of_blanks_longer_than_any_real_one_is_not_verified(
    dns_server: DnsServer, auth: Authenticator, blanks: int, result: str
) -> None:
    sealed = SenderDomain(dns_server, "lists.example.net").arc_seal(message(), "spf=pass")
    assert verify(auth, sealed.replace(b"\r\n b=", b"\r\n b=" + b" " * blanks, 1)).arc == result


def test_a_run_of_blanks_in_a_signature_costs_no_time(auth: Authenticator) -> None:
    """64 KB of blanks in h= took 6.2 s to check (in b=, 9.7 s), in each of five signatures."""
    blank_h = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=evil.example; s=s1; h=from" + b" " * 65_536 + b"x; bh=AAAA; b=AAAA\r\n"
    )
    started = time.monotonic()
    verdicts = verify(auth, blank_h * 5 + message())
    assert time.monotonic() - started < 2
    assert [(d.result, d.domain) for d in verdicts.dkim] == [("permerror", "evil.example")] * 5


def test_an_arc_set_costlier_to_check_than_any_real_one_is_not_verified(
    dns_server: DnsServer, auth: Authenticator
) -> None:
    lists = SenderDomain(dns_server, "lists.example.net")
    names = SIGNED_HEADERS + [b"x-absent-%d" % n for n in range(101 - len(SIGNED_HEADERS))]
    plain = b"Authentication-Results: lists.example.net; spf=pass\r\n" + message()
    seal = dkim.arc_sign(
        plain, b"s1", b"lists.example.net", lists.private_key, b"lists.example.net", include_headers=names
    )
    assert verify(auth, b"".join(seal) + plain).arc == "permerror"


def _der_rsa_public_key(modulus: int, exponent: int) -> str:
    """An RSAPublicKey (RFC 8017) in base64, as a key record's p= may hold it."""

    def der(tag: int, content: bytes) -> bytes:
        length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
        return bytes([tag]) + (bytes([0x80 | len(length)]) + length if len(content) > 127 else length[-1:]) + content

    def integer(value: int) -> bytes:
        return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    return base64.b64encode(der(0x30, integer(modulus) + integer(exponent))).decode()


@pytest.mark.parametrize(("modulus_bits", "exponent"), [(16385, 65537), (2048, 2**64 + 1)])
def test_a_key_larger_than_any_real_one_is_not_verified(
    dns_server: DnsServer, auth: Authenticator, modulus_bits: int, exponent: int
) -> None:
    # dkimpy's RSA is pure Python: a key as large as a record allows holds the process for minutes.
    sender = SenderDomain(dns_server, "big-key.example")
    modulus = (1 << (modulus_bits - 1)) | 1
    dns_server.txt("big._domainkey.big-key.example", f"v=DKIM1; k=rsa; p={_der_rsa_public_key(modulus, exponent)}")
    signed = sender.sign(message(from_="a@big-key.example")).replace(b"s=s1;", b"s=big;", 1)
    assert [(d.selector, d.result) for d in verify(auth, signed).dkim] == [("big", "permerror")]


def test_a_signed_body_line_of_blanks_is_checked_in_linear_time(auth: Authenticator, example_org: SenderDomain) -> None:
    """dkimpy's relaxed body canonicalization was quadratic in a run of blanks no CRLF ends: 100 KB took 9 s."""
    head, _, _ = message().partition(b"\r\n\r\n")
    plain = head + b"\r\n\r\n" + b" " * 100_000 + b"x\r\n"
    signed = dkim.sign(plain, b"s1", b"example.org", example_org.private_key, canonicalize=(b"relaxed", b"relaxed"))
    started = time.monotonic()
    verdicts = verify(auth, signed + plain)
    assert time.monotonic() - started < 2
    assert [d.result for d in verdicts.dkim] == ["pass"]  # the body was canonicalized as dkimpy does


def unverifiable_arc_sets(instances: list[int], domain: str) -> bytes:
    """Complete ARC sets of *domain* that do not verify (bh= and b= are junk): each still makes dkimpy hash the body."""
    return b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=%s; s=s1; b=AAAA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=s1; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=%d; %s; arc=pass\r\n" % ((i, domain.encode()) * 3)
        for i in sorted(instances, reverse=True)
    )


def test_an_arc_chain_of_50_sets_is_checked_and_one_of_51_fails_unchecked(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    """RFC 8617 5.2: more than 50 sets is a fail; dkimpy would verify them all, each hashing the body again."""
    chain = example_org.sign(message())
    for hop in range(1, 51):  # each hop a forwarder of its own: a forwarder reads only its own results
        forwarder = SenderDomain(dns_server, f"hop{hop}.example.net", key="hop")
        chain = forwarder.arc_seal(chain, "arc=pass" if hop > 1 else "dkim=pass header.d=example.org")
    assert verify(auth, unverifiable_arc_sets([51], "hop1.example.net") + chain).arc == "fail"
    assert not [name for name, _ in dns_server.queries if "._domainkey.hop" in name]  # no set was checked
    assert verify(auth, chain).arc == "pass"


def test_a_body_is_canonicalized_once_however_many_signatures_hash_it(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    """50 ARC message signatures on 2 MiB of short words took 5 s: dkimpy canonicalized the body for each."""
    SenderDomain(dns_server, "lists.example.net")
    head, _, _ = message().partition(b"\r\n\r\n")
    plain = head + b"\r\n\r\n" + b"a  b\t c \r\n" * 200_000
    signed = dkim.sign(plain, b"s1", b"example.org", example_org.private_key, canonicalize=(b"relaxed", b"relaxed"))
    raw = unverifiable_arc_sets(list(range(1, 51)), "lists.example.net") + signed + plain
    started = time.monotonic()
    verdicts = verify(auth, raw)
    assert time.monotonic() - started < 2
    assert [d.result for d in verdicts.dkim] == ["pass"]  # the body the ARC checks canonicalized, shared
    assert verdicts.arc == "fail"


@pytest.mark.parametrize(("continuation_lines", "checked"), [(4000, ["pass"]), (5001, [])])
def test_a_header_section_longer_than_any_real_one_is_read_as_unsigned(
    auth: Authenticator, example_org: SenderDomain, continuation_lines: int, checked: list[str]
) -> None:
    """dkimpy joins a field's continuation lines by copying it each time: one of 200,000 lines took 3 s."""
    long_field = b"X-Long: x" + b"\r\n x" * continuation_lines + b"\r\n"
    verdicts = verify(auth, example_org.sign(long_field + message()))
    assert [d.result for d in verdicts.dkim] == checked
    assert verdicts.dmarc.result == "pass"  # by SPF, aligned


def test_from_fields_are_read_for_their_domains_up_to_4_kib_in_all_and_scanned_past_it() -> None:
    long_from = b"From: " + b"x" * 4100 + b" <b@elsewhere.example>\r\n"
    head, end, body = message().partition(b"\r\n\r\n")
    assert from_header_domains(head + b"\r\n" + long_from[:-2] + end + body) == ["example.org", "elsewhere.example"]
    assert from_header_domains(long_from + message()) == ["elsewhere.example", "example.org"]
    listed = b'From: "' + b"y@display.example " * 300 + b'" <b@Elsewhere.example>, c@third.example\r\n'
    assert from_header_domains(listed + b"\r\nhi\r\n") == ["display.example", "elsewhere.example", "third.example"]


def test_a_spoof_with_a_from_longer_than_4_kib_still_fails_dmarc(
    auth: Authenticator, example_org: SenderDomain
) -> None:
    spoof = message(from_='"Bank Security Team ' + "x" * 4100 + '" <ceo@example.org>')
    verdicts = verify(auth, spoof, ip=OTHER_IP)
    assert (verdicts.dmarc.result, verdicts.dmarc.policy, verdicts.dmarc.domain) == ("fail", "reject", "example.org")
    assert verdicts.dmarc_rejects


def test_a_from_the_stdlib_reads_by_recursion_is_unreadable_not_a_crash(
    auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    nested = b"From: " + b"g:" * 5000 + b"\r\nSubject: x\r\n\r\nhi\r\n"
    verdicts = verify(auth, nested)
    assert verdicts.dmarc.result == "permerror"  # no From domain to align with
    assert verdicts.spf.result != "permerror"  # the other checks ran: nothing crashed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_signature_s_domain_and_selector_are_reported_as_long_as_a_line(auth: Authenticator) -> None:
    huge = b"DKIM-Signature: v=1; a=rsa-sha256; d=" + b"d" * 5000 + b"; s=" + b"s" * 5000 + b"; h=from; bh=x; b=x\r\n"
    (checked,) = verify(auth, huge + message()).dkim
    assert (len(checked.domain), len(checked.selector)) == (SHOWN_LENGTH, SHOWN_LENGTH)
    assert checked.domain.endswith("d…")  # cut as the activity log cuts text, not a character taken for a bad one


def test_domains_and_selectors_a_sender_writes_are_reported_printable(auth: Authenticator) -> None:
    """dkimpy splits a signature's lines on LF only: a bare CR in s= reached our Authentication-Results as it came."""
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=evil\x0c.example; s=x\rX-Spam-Status: No, score=-9.0 (;"
        b" h=from; bh=AAAA; b=AAAA\r\n"
        b"From: m@evil\x0b.example\r\nTo: help@in.test\r\n\r\nbody\r\n"
    )
    verdicts = auth.verify(raw, client_ip=SENDER_IP, mail_from="m@evil\x1b.example", helo="mx.evil.example")
    (dkim_verdict,) = verdicts.dkim
    assert dkim_verdict.selector == "x\ufffdx-spam-status\ufffd\ufffdno\ufffd\ufffdscore\ufffd-9.0\ufffd\ufffd"
    assert dkim_verdict.domain == "evil\ufffd.example"
    assert (verdicts.spf.domain, verdicts.dmarc.domain) == ("evil\ufffd.example", "evil\ufffd.example")
    assert verdicts.header_value("mx.in.test").isprintable()


def test_a_selector_cannot_write_a_clause_into_our_authentication_results(auth: Authenticator) -> None:
    """authres quotes a value for some characters only: an '@' and blanks went in as they came."""
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=evil.example; s=a@b dkim=pass header.d=bank.example;"
        b" h=from; bh=AAAA; b=AAAA\r\n" + message()
    )
    (dkim_verdict,) = verify(auth, raw).dkim
    assert dkim_verdict.selector == "a\ufffdb\ufffddkim\ufffdpass\ufffdheader.d\ufffdbank.example"
    assert "dkim=pass" not in verify(auth, raw).header_value("mx.in.test")


def test_answers_are_cached_for_their_ttl(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    signed = example_org.sign(message())
    verify(auth, signed)
    asked = len(dns_server.queries)
    assert asked > 0
    for _ in range(3):
        verify(auth, signed)
    assert len(dns_server.queries) == asked


def test_a_dns_server_that_never_answers_gives_temperror_in_bounded_time() -> None:
    silent = DnsServer(silent=True).start()
    auth = Authenticator(AuthSettings(True, (("127.0.0.1", silent.port),), 1.0))
    try:
        started = time.monotonic()
        signed = SenderDomain(silent, "example.org").sign(message())
        verdicts = verify(auth, signed)
        assert time.monotonic() - started < 10  # generous: bounded by the 1 s timeout, not stuck
    finally:
        auth.close()
        silent.stop()
    assert verdicts.spf.result == "temperror"
    assert [d.result for d in verdicts.dkim] == ["temperror"]
    assert verdicts.dmarc.result == "temperror"
    assert silent.queries  # it was asked, and said nothing


def test_smtp_time_checks_refuse_a_definite_fail_and_accept_when_dns_is_silent(
    auth: Authenticator, example_org: SenderDomain
) -> None:
    streams = [StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET, spf_fail="reject")]
    streams.append(replace(streams[0], name="billing", reject_dmarc_reject=True, spf_fail="accept"))

    async def checks(policy: SmtpAuthPolicy) -> tuple[str | None, str | None, str | None, str | None]:
        transaction = SMTPEnvelope()  # the policy remembers SPF per aiosmtpd transaction
        at_mail = await policy.at_mail(transaction, OTHER_IP, "alice@example.org", "mail.example.org")
        at_rcpt = policy.at_rcpt(transaction, "support")
        spoof = message()
        at_data = await policy.at_data(spoof, {"billing"}, OTHER_IP, "alice@example.org", "mail.example.org")
        mixed = await policy.at_data(spoof, {"billing", "support"}, OTHER_IP, "alice@example.org", "h")
        return at_mail, at_rcpt, at_data, mixed

    policy = SmtpAuthPolicy(auth, streams)
    try:
        at_mail, at_rcpt, at_data, mixed = asyncio.run(checks(policy))
    finally:
        policy.close()
    assert at_mail is None  # not every stream refuses SPF failures: refused per recipient instead
    assert at_rcpt == SPF_REFUSAL
    assert at_data is not None
    assert at_data.startswith("550 5.7.1")
    assert mixed is None  # "support" takes it; the processor blocks it for "billing"

    silent = DnsServer(silent=True).start()
    quiet = Authenticator(AuthSettings(True, (("127.0.0.1", silent.port),), 1.0))
    policy = SmtpAuthPolicy(quiet, streams)
    try:
        assert asyncio.run(checks(policy)) == (None, None, None, None)
    finally:
        policy.close()
        quiet.close()
        silent.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.org\r\nthis line has no colon\r\nDKIM-Signature: v=1; d=example.org\r\n\r\nbody\r\n",
        b"DKIM-Signature: \xff\xfe garbage\r\nARC-Seal: i=x\r\nFrom: <>\r\n\r\n",
        b"ARC-Seal: i=" + b"9" * 5000 + b"; cv=none\r\nFrom: a@example.org\r\n\r\nbody\r\n",  # past int()'s digits
        b"",
    ],
)
def test_hostile_messages_get_verdicts_and_never_an_exception(auth: Authenticator, raw: bytes) -> None:
    verdicts = verify(auth, raw)
    assert verdicts.spf.result == "none"  # the SPF of the envelope is still checked
    assert verdicts.dmarc.result in ("none", "permerror")
    assert verdicts.arc in ("none", "fail", "permerror")
    assert all(d.result in ("fail", "permerror") for d in verdicts.dkim)


def test_a_server_failure_is_temperror_for_the_checks_that_needed_the_answer(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    dns_server.failing.add("example.org")  # the SPF record's name; the key and DMARC record still answer
    verdicts = verify(auth, example_org.sign(message()))
    assert verdicts.spf.result == "temperror"
    assert [d.result for d in verdicts.dkim] == ["pass"]
    assert verdicts.dmarc.result == "pass"  # the aligned DKIM pass is enough
    spoof = verify(auth, message())
    assert (spoof.spf.result, spoof.dmarc.result) == ("temperror", "temperror")  # might have passed: never "fail"


def test_a_server_failure_for_an_identifier_that_cannot_align_leaves_a_spoof_failing(
    dns_server: DnsServer, auth: Authenticator, example_org: SenderDomain
) -> None:
    # The spoofer breaks its own zone: its MAIL FROM's SPF and its signature's key answer SERVFAIL.
    spoofer = SenderDomain(dns_server, "spoofer.example").spf("v=spf1 +all")
    dns_server.failing |= {"spoofer.example", "s1._domainkey.spoofer.example"}
    unaligned_spf = verify(auth, message(), ip=OTHER_IP, mail_from="x@spoofer.example")
    unaligned_dkim = verify(auth, spoofer.sign(message()), ip=OTHER_IP)
    assert (unaligned_spf.spf.result, unaligned_dkim.dkim[0].result) == ("temperror", "temperror")
    for spoof in (unaligned_spf, unaligned_dkim):
        assert (spoof.dmarc.result, spoof.dmarc.policy) == ("fail", "reject")
        assert spoof.dmarc_rejects


@pytest.mark.parametrize(
    "record",
    [
        "v=DMARC1; p=reject; rua=mailto:a@example.org; mailto:b@example.org",  # a second URI after a ";"
        "v=DMARC1; p=reject; ; rua=mailto:d@example.org",  # an empty part
        "v=DMARC1; p=reject; fo",  # a tag with no value
        "v=DMARC1; P=Reject; adkim=s; adkim=r",  # capitals, and a tag given twice
    ],
)
def test_a_slip_after_a_dmarc_record_s_policy_leaves_the_policy_applied(
    dns_server: DnsServer, auth: Authenticator, record: str
) -> None:
    domain = "slip.example"
    sender = SenderDomain(dns_server, domain).spf(f"v=spf1 ip4:{SENDER_IP} -all").dmarc(record)
    spoof = verify(auth, message(from_=f"ceo@{domain}"), ip=OTHER_IP, mail_from=f"ceo@{domain}")
    assert (spoof.dmarc.result, spoof.dmarc.policy) == ("fail", "reject")
    signed = verify(auth, sender.sign(message(from_=f"ceo@{domain}")), mail_from=f"ceo@{domain}")
    assert signed.dmarc.result == "pass"
