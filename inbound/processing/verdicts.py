"""Sender verdicts as inbound reports them: SPF, DKIM, DMARC and ARC results, and the
``Authentication-Results`` header (RFC 8601) that carries them.

Stage: made by the checks (:mod:`.auth`); read by the screen (``screen.py``), which writes
the header and the payload's ``auth`` object from them, and by the SMTP edge's refusals
(``edge/authpolicy.py``). Results are named as RFC 8601 names them: pass, fail, softfail,
neutral, none, temperror, permerror.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from authres import AuthenticationResultsHeader, DKIMAuthenticationResult, SPFAuthenticationResult
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult

PASS, FAIL, NONE, TEMPERROR, PERMERROR = "pass", "fail", "none", "temperror", "permerror"

# The authserv-id as RFC 8601 2.2 has it (RFC 2045's value): a quoted-string, its end not required (a reader
# that forgives the missing quote finds the same id), or a token, which ends at a blank, a comment or the ";".
_QUOTED_ID = re.compile(r'"((?:[^"\\]|\\.)*)', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_TOKEN_END = re.compile(r'[\s();"]')


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
    """Whether an Authentication-Results value says it is from *authserv_id* (then, arriving from outside, forged).

    The id alone is read, by hand: authres parses the whole value, in time quadratic in a
    sender's nesting (900 KB of "(\\" took 6.5 s), and refuses junk a lenient reader skips.
    """
    return _leading_authserv_id(header_value).lower() == authserv_id.lower()


def _leading_authserv_id(header_value: str) -> str:
    """The authserv-id a value starts with, read as RFC 8601 2.2 writes it: CFWS, then a token or a quoted-string.

    Only the id matters, not whether the rest parses: a reader that skips the
    junk a sender appends still finds our id, so the header must go. Comments
    nest and may hold quoted pairs; the id may be followed by a version or a
    comment before its ``;``. Linear in the value, whatever a sender nests.
    """
    at, depth = 0, 0
    while at < len(header_value):  # comments and blanks before the id
        char = header_value[at]
        if depth and char == "\\":
            at += 1
        elif char == "(":
            depth += 1
        elif depth and char == ")":
            depth -= 1
        elif not depth and not char.isspace():
            break
        at += 1
    quoted = _QUOTED_ID.match(header_value, at)
    if quoted:
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)).strip()
    return _TOKEN_END.split(header_value[at:], 1)[0]
