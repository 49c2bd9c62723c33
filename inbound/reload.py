"""SIGHUP: read the configuration file again and take its stream table, if it is valid.

Stage: every ``inbound serve`` process (the supervisor passes HUP on to its
children; each reads the file itself and swaps its own parts, see
``Service.reload``). Input: the running settings, whose ``path`` is the file.
Output: the settings to run with from now on -- the running ones with the
file's ``[[streams]]`` -- or None to keep the running ones.

What a reload changes is the stream table: streams may be added, changed
(addresses, webhook URL, signing secrets, block lists, payload format,
verdict and attachment policies, rate, silence alert) and removed. Every other
setting is read by a part built once at start-up (a listener, the data
directory, the bus, the activity store, the HTTP client of ``[webhooks]``, the
DNS resolvers of ``[auth]`` ...): a change to one is logged as needing a
restart, and the value in use stays.

Failure behaviour: nothing here raises, so HUP never ends the process. A file
that is not valid changes nothing, and each of its problems is logged at
ERROR on a line of its own naming the file and the key. So is a stream that
the file makes valid only through a setting that takes a restart (a private
webhook address with a new ``webhooks.allow_private``; a verdict policy with
a new ``[auth]`` or ``[spam]``): running it half-configured would deliver
what its owner meant to block.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields, replace

from .config import DELIVER, Settings, StreamSettings, check_webhook_url, load_settings
from .errors import ConfigError

log = logging.getLogger(__name__)

# Settings fields whose key in the file has another name.
_KEYS = {"host": "listen", "port": "listen"}


def reread(running: Settings, environ: Mapping[str, str] = os.environ) -> Settings | None:
    """The running settings with the file's streams, or None (every problem logged) to keep them all."""
    path = str(running.path)
    try:
        fresh = load_settings(running.path, environ)
        unmet = unmet_by_running(running, fresh)
        if unmet:
            raise ConfigError(path, *unmet[0], more=unmet[1:])
    except ConfigError as error:
        for line in error.lines:
            log.error("SIGHUP: %s", line)
        log.error("SIGHUP: %d problem(s) in %s: the configuration in use stays", len(error.problems), path)
        return None
    except Exception:
        # A file the checks did not foresee is a bug of ours, but never the end of the running service.
        log.exception("SIGHUP: %s could not be read: the configuration in use stays", path)
        return None
    for key in needs_restart(running, fresh):
        log.warning("SIGHUP: %s: %s changed: it takes a restart; the value in use stays", path, key)
    log.info("SIGHUP: %s: %s", path, describe_change(running.streams, fresh.streams))
    return replace(running, streams=fresh.streams)


def needs_restart(running: Settings, fresh: Settings) -> list[str]:
    """The keys outside ``[[streams]]`` whose value differs (never the values: some are secrets)."""
    keys: list[str] = []
    for section in fields(Settings):
        if section.name in ("path", "streams"):
            continue
        old, new = getattr(running, section.name), getattr(fresh, section.name)
        for key in fields(old):
            name = f"{section.name}.{_KEYS.get(key.name, key.name)}"
            if getattr(old, key.name) != getattr(new, key.name) and name not in keys:
                keys.append(name)
    return keys


def unmet_by_running(running: Settings, fresh: Settings) -> list[tuple[str, str]]:
    """(key, problem) for each stream that relies on a setting the file changes but a reload does not."""
    problems = []
    newly_private = fresh.webhooks.allow_private and not running.webhooks.allow_private
    for stream in fresh.streams:
        section = f"streams.{stream.name}"
        if newly_private:
            try:
                check_webhook_url(stream.webhook_url, allow_private=False)
            except ValueError as refused:
                problems.append((f"{section}.webhook_url", f"{refused}: webhooks.allow_private takes a restart"))
        if not running.auth.enabled and uses_auth(stream):
            problems.append((section, "its verdict policy needs [auth] enabled, which takes a restart"))
        if running.spam.spamd is None and uses_spam(stream):
            problems.append((section, "its spam policy needs [spam] spamd, which takes a restart"))
    return problems


def uses_auth(stream: StreamSettings) -> bool:
    return stream.on_dmarc_fail != DELIVER or stream.reject_dmarc_reject or stream.spf_fail == "reject"


def uses_spam(stream: StreamSettings) -> bool:
    return stream.on_spam != DELIVER or stream.spam_threshold is not None


def describe_change(old: tuple[StreamSettings, ...], new: tuple[StreamSettings, ...]) -> str:
    """One line for the log: which streams came, went or changed (by name: settings hold secrets)."""
    before, after = {s.name: s for s in old}, {s.name: s for s in new}
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("added", sorted(after.keys() - before.keys())),
            ("removed", sorted(before.keys() - after.keys())),
            ("changed", sorted(n for n in after.keys() & before.keys() if after[n] != before[n])),
        )
        if names
    ]
    return f"stream table reloaded ({len(new)} streams): {'; '.join(parts)}" if parts else "no stream changed"
