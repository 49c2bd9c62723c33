"""``[[streams]]``: each stream's addresses, webhook, secrets and policies.

A stream is named in problems by its name (``streams.support.webhook_url``),
by its place (``streams[2]``) while it has no usable one.
"""

from __future__ import annotations

import re
from typing import Any

from ..addresses import mailbox_key
from .checks import check_signing_secret, check_webhook_url, valid_pattern
from .reading import Reader
from .settings import DELIVER, PAYLOAD_FORMATS, STREAM_NAME, VERDICT_ACTIONS, AuthSettings, SpamSettings, StreamSettings

# An entry of drop_attachment_types: a content type (a subtype of "*" for all of a type) or a file extension.
ATTACHMENT_KIND = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/(?:[A-Za-z0-9!#$&^_.+-]+|\*)|\.[A-Za-z0-9_+-]{1,32}")
_REQUIRED_STREAM_KEYS = ("name", "addresses", "webhook_url")
_STREAM_KEYS = {
    "name",
    "addresses",
    "webhook_url",
    "signing_secret",
    "signing_secrets",
    "max_requests_per_second",
    "silence_alert_after",
    "block_senders",
    "payload_format",
    "include_raw",
    "mailgun_signing_key",
    "sendgrid_raw",
    "max_attachment_size",
    "max_attachments",
    "drop_attachment_types",
    "on_dmarc_fail",
    "reject_dmarc_reject",
    "spf_fail",
    "spam_threshold",
    "on_spam",
}


class StreamsReader(Reader):
    def streams(
        self, raw: dict[str, Any], allow_private: bool, auth: AuthSettings, spam: SpamSettings
    ) -> tuple[StreamSettings, ...]:
        entries = raw.get("streams", [])
        if not isinstance(entries, list):
            self.problem("streams", "must be an array of tables ([[streams]])")
            return ()
        if not entries:
            self.problem("streams", "no [[streams]]: inbound would accept no mail (see examples/inbound.toml)")
        streams: list[StreamSettings] = []
        # Each address, as routing compares it, and the stream and spelling that listed it first: one
        # domain in two spellings (a trailing dot, its Unicode and A-label forms) is one address to
        # routing, which would give all its mail to whichever stream came last.
        owner: dict[str, tuple[str, str]] = {}
        for i, entry in enumerate(entries):
            named = entry.get("name") if isinstance(entry, dict) else None
            # A stream is named by its name in problems; by its place while it has no usable one.
            is_name = isinstance(named, str) and bool(STREAM_NAME.fullmatch(named))
            unique = is_name and named not in {s.name for s in streams}
            section = f"streams.{named}" if unique else f"streams[{i}]"
            if not isinstance(entry, dict):
                self.problem(section, f"must be a table, not {type(entry).__name__}")
                continue
            t = self.table({section: entry}, section, _STREAM_KEYS)
            for key in _REQUIRED_STREAM_KEYS:
                if key not in t:
                    self.unreadable(f"{section}.{key}", "is required")
            name = self.get(t, section, "name", str, "")
            if self.check(
                f"{section}.name", is_name, "must be 1-63 of a-z, 0-9 and '_', starting with a letter or digit"
            ):
                self.check(f"{section}.name", unique, f"duplicate stream name {name!r}")
            addresses = self.strings(t, section, "addresses", ())
            self.check(f"{section}.addresses", bool(addresses), "must list at least one address")
            for address in addresses:
                key = f"{section}.addresses"
                self.check(key, valid_pattern(address), f"{address!r} is not an address or *@domain")
                routed, (first, spelled) = mailbox_key(address), owner.get(mailbox_key(address), (name, address))
                as_spelled = "" if spelled.lower() == address.lower() else f" (the same address as {spelled!r})"
                # A stream may name its own domain in both spellings: only another stream's claim is a clash.
                self.check(key, first == name, f"{address!r} is already in stream {first!r}{as_spelled}")
                owner.setdefault(routed, (name, address))
            url = self.get(t, section, "webhook_url", str, "")
            self.valid(f"{section}.webhook_url", url, lambda u: check_webhook_url(u, allow_private))
            secret, *other_secrets = self.signing_secrets(t, section)
            blocks = self.strings(t, section, "block_senders", ())
            for pattern in blocks:
                self.check(
                    f"{section}.block_senders", valid_pattern(pattern), f"{pattern!r} is not an address or *@domain"
                )
            policies = self.verdict_policies(t, section, auth, spam)
            max_size, max_count, drop_types = self.attachment_policy(t, section)
            streams.append(
                StreamSettings(
                    name,
                    addresses,
                    url,
                    secret,
                    blocks,
                    *self.payload_options(t, section),
                    **policies,
                    other_signing_secrets=tuple(other_secrets),
                    max_requests_per_second=self.rate(t, section),
                    silence_alert_after=self.silence(t, section),
                    max_attachment_size=max_size,
                    max_attachments=max_count,
                    drop_attachment_types=drop_types,
                )
            )
        return tuple(streams)

    def attachment_policy(self, t: dict[str, Any], section: str) -> tuple[int | None, int | None, tuple[str, ...]]:
        """``max_attachment_size`` (bytes, 1 or more), ``max_attachments`` (0 or more), ``drop_attachment_types``."""
        limits: list[int | None] = []
        for key, least in (("max_attachment_size", 1), ("max_attachments", 0)):
            value = t.get(key)
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= least)
            limits.append(
                value if self.check(f"{section}.{key}", ok, f"must be a whole number, {least} or more") else None
            )
        kinds = self.strings(t, section, "drop_attachment_types", ())
        for kind in kinds:
            self.check(
                f"{section}.drop_attachment_types",
                bool(ATTACHMENT_KIND.fullmatch(kind)),
                f"{kind!r} is neither a content type (image/png, image/*) nor an extension (.exe)",
            )
        return limits[0], limits[1], tuple(kind.lower() for kind in kinds)

    def verdict_policies(
        self, t: dict[str, Any], section: str, auth: AuthSettings, spam: SpamSettings
    ) -> dict[str, Any]:
        """A stream's policies on verdicts; each needs the verdict it acts on to be computed."""
        policies: dict[str, Any] = {}
        for key in ("on_dmarc_fail", "on_spam"):
            action = self.get(t, section, key, str, DELIVER)
            self.check(f"{section}.{key}", action in VERDICT_ACTIONS, f"must be one of {', '.join(VERDICT_ACTIONS)}")
            policies[key] = action
        policies["reject_dmarc_reject"] = self.get(t, section, "reject_dmarc_reject", bool, False)
        policies["spf_fail"] = self.get(t, section, "spf_fail", str, "accept")
        self.check(f"{section}.spf_fail", policies["spf_fail"] in ("accept", "reject"), 'must be "accept" or "reject"')
        policies["spam_threshold"] = self.number(t, section, "spam_threshold")
        auth_keys = [k for k in ("on_dmarc_fail", "reject_dmarc_reject", "spf_fail") if k in t]
        for key in auth_keys:
            self.check(f"{section}.{key}", auth.enabled, "needs the verdicts: set [auth] enabled = true")
        for key in ("on_spam", "spam_threshold"):
            self.check(f"{section}.{key}", key not in t or spam.spamd is not None, "needs [spam] spamd")
        return policies

    def silence(self, t: dict[str, Any], section: str) -> float | None:
        if "silence_alert_after" not in t:
            return None
        silence = self.duration(t, section, "silence_alert_after", "1h")  # the default: a placeholder only
        self.check(f"{section}.silence_alert_after", silence > 0, "must be longer than 0s")
        return silence

    def rate(self, t: dict[str, Any], section: str) -> float | None:
        rate = self.number(t, section, "max_requests_per_second")
        self.check(f"{section}.max_requests_per_second", rate is None or rate > 0, "must be more than 0")
        return rate

    def signing_secrets(self, t: dict[str, Any], section: str) -> tuple[str, ...]:
        """``signing_secret``, or ``signing_secrets`` (several while a receiver moves to a new key)."""
        one, several = "signing_secret" in t, "signing_secrets" in t
        if not (one or several):
            self.unreadable(f"{section}.signing_secret", "is required (or signing_secrets)")
            return ("",)
        self.check(
            f"{section}.signing_secrets", not (one and several), "give signing_secret or signing_secrets, not both"
        )
        if one:
            secrets: tuple[str, ...] = (self.get(t, section, "signing_secret", str, ""),)
            key = f"{section}.signing_secret"
        else:
            secrets = self.strings(t, section, "signing_secrets", ())
            key = f"{section}.signing_secrets"
            self.check(key, bool(secrets), "must list at least one secret")
            self.check(key, len(set(secrets)) == len(secrets), "lists a secret twice")
        for secret in secrets:
            self.valid(key, secret, check_signing_secret)
        return secrets or ("",)

    def payload_options(self, t: dict[str, Any], section: str) -> tuple[str, bool, str | None, bool]:
        """``payload_format`` and the keys that go with it; a key for another format is an error, not ignored."""
        fmt = self.get(t, section, "payload_format", str, "inbound")
        self.check(
            f"{section}.payload_format",
            fmt in PAYLOAD_FORMATS,
            f"must be one of {', '.join(map(repr, PAYLOAD_FORMATS))}, not {fmt!r}",
        )
        include_raw = self.get(t, section, "include_raw", bool, False)
        sendgrid_raw = self.get(t, section, "sendgrid_raw", bool, False)
        self.check(
            f"{section}.sendgrid_raw", fmt == "sendgrid" or not sendgrid_raw, 'needs payload_format = "sendgrid"'
        )
        key = self.get(t, section, "mailgun_signing_key", str, "") or None
        if fmt == "mailgun":
            self.check(f"{section}.mailgun_signing_key", key is not None, 'is required with payload_format = "mailgun"')
        else:
            self.check(f"{section}.mailgun_signing_key", key is None, 'needs payload_format = "mailgun"')
        return fmt, include_raw, key, sendgrid_raw
