"""The activity web page at ``/``: the API's data as server-rendered HTML, for people.

Same tokens as the API, given once in a login form and kept in a cookie that
is ``HttpOnly`` (no script can read it), ``Secure`` (sent only over HTTPS, or
to localhost) and ``SameSite=Strict`` (no other site can make the browser send
it, so a form elsewhere cannot press Retry here). No script and no build step:
plain forms and links, a chart drawn as inline SVG, a layout that narrows to a
phone. Jinja2 escapes every value, as every byte of mail may be hostile.

Pages: the list (status and stream filters, a search box, cursor paging, the
status panel, a 30-day chart per stream), one message (parsed fields,
attachments to download, the attempt timeline, the raw message, Retry and
Bypass buttons for tokens that may act), and the login form.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ..events import Status
from ..ops import actions
from ..ops.rawmessage import RawMessageNotFound, raw_message, retention_of
from ..ops.status import collect
from ..records import JSON
from .backends import Backends, Using, access, decode_cursor, encode_cursor
from .exposition import failing_streams
from .problems import Problem

COOKIE = "inbound_token"
SESSION_SECONDS = 12 * 3600
PAGE = 50
CHART_DAYS = 30
# What the message page says after Retry or Deliver anyway, by the action its redirect names. Only
# these sentences: text taken from the URL would let any link put its own words in the page's mouth.
DONE = {
    "retry": "retry queued: the delivery goes out again, as its next generation",
    "bypass": "bypass queued: the message is processed again, past its stream's block rules",
}
REFUSED = {
    "retry": "retry does not apply: only a failed delivery of a configured stream can be retried",
    "bypass": "deliver anyway does not apply: only a blocked message of a configured stream can be, while the bus"
    " still holds it",
    "pending": "not taken: an earlier action on this message is not in the activity log yet; try again in a moment",
}
COLOURS = {"queued": "#8a8f98", "processed": "#5b8def", "retrying": "#e3a21a", "delivered": "#2e9d5b",
           "failed": "#d64545", "blocked": "#6b4fbb"}  # fmt: skip

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class _LoginNeeded(Exception):
    pass


def _who(request: Request, backends: Backends) -> str:
    allowed = access(backends.settings, request.cookies.get(COOKIE, ""))
    if allowed is None:
        raise _LoginNeeded
    return allowed


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"colours": COLOURS, **context}, status_code=status)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html")


@router.post("/login")
async def login(request: Request, backends: Using) -> Response:
    token = parse_qs((await request.body()).decode("utf-8", "replace")).get("token", [""])[0].strip()
    if access(backends.settings, token) is None:
        return _page(request, "login.html", 401, error="That token is not one this service accepts.")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, httponly=True, secure=True, samesite="strict")
    return response


@router.post("/logout")
def logout() -> Response:
    response = _to_login()
    response.delete_cookie(COOKIE, httponly=True, secure=True, samesite="strict")
    return response


@router.get("/")
def activity(
    request: Request,
    backends: Using,
    *,
    status: str = "",
    stream: str = "",
    q: str = "",
    cursor: str = "",
) -> Response:
    try:
        role = _who(request, backends)
    except _LoginNeeded:
        return _to_login()
    try:
        after = decode_cursor(cursor) if cursor else None
    except Problem as exc:
        return _page(request, "problem.html", 400, role=role, heading="Bad request", reason=exc.detail)
    streams = [s.name for s in backends.settings.streams]
    chosen = Status(status) if status in {s.value for s in Status} else None
    records = backends.store.list(
        status=chosen,
        stream=stream if stream in streams else None,
        text=q or None,
        after=after,
        limit=PAGE + 1,
    )
    more = len(records) > PAGE
    records = records[:PAGE]
    filters = {"status": status, "stream": stream, "q": q}
    next_url = "/?" + urlencode({**filters, "cursor": encode_cursor(records[-1].position)}) if more else None
    report = collect(backends.settings, backends.bus, backends.store)
    return _page(
        request,
        "list.html",
        role=role,
        records=records,
        filters=filters,
        statuses=[s.value for s in Status],
        streams=streams,
        next_url=next_url,
        report=report,
        failing=failing_streams(),
        counts=backends.store.count_by_status(),
        charts=[_chart(backends, name) for name in streams],
    )


def _chart(backends: Backends, stream: str) -> dict[str, Any]:
    """One stream's last CHART_DAYS days as stacked bars: each day's count per status, scaled to the busiest."""
    first = datetime.now(UTC).date() - timedelta(days=CHART_DAYS - 1)
    counts = backends.store.count_by_day(since=f"{first.isoformat()}T00:00:00.000Z", stream=stream)
    days = [(first + timedelta(days=n)).isoformat() for n in range(CHART_DAYS)]
    per_day = [[(s.value, counts.get((d, s), 0)) for s in Status if counts.get((d, s), 0)] for d in days]
    busiest = max((sum(n for _, n in day) for day in per_day), default=0) or 1
    bars = []
    for x, (date, day) in enumerate(zip(days, per_day, strict=True)):
        y = 100.0
        for status, n in day:
            height = 100.0 * n / busiest
            y -= height
            bars.append({"x": x * 10, "y": y, "height": height, "status": status, "title": f"{date}: {n} {status}"})
    return {"stream": stream, "bars": bars, "total": sum(counts.values()), "first": days[0], "last": days[-1]}


@router.get("/m/{message_id}")
def message(request: Request, backends: Using, message_id: str, done: str = "", refused: str = "") -> Response:
    try:
        role = _who(request, backends)
    except _LoginNeeded:
        return _to_login()
    try:
        records = actions.find_all(backends.store, message_id)
    except actions.UnknownMessage as exc:
        return _page(request, "problem.html", 404, role=role, heading="Not found", reason=str(exc))
    return _page(
        request,
        "message.html",
        role=role,
        message_id=message_id,
        records=[(r, _attachments(r)) for r in records],
        streams=backends.streams,
        done=DONE.get(done),
        error=REFUSED.get(refused),
    )


def _attachments(record: Any) -> list[dict[str, Any]]:
    """The attachments of a JSON webhook body (inbound's format), by position; none for other bodies."""
    if record.payload is None or record.payload_type != JSON:
        return []
    try:
        parts = json.loads(record.payload).get("attachments") or []
        return [{"n": n, "filename": p.get("filename"), "type": p["content_type"], "size": p["size"]}
                for n, p in enumerate(parts)]  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


@router.get("/m/{message_id}/attachments/{number}")
def attachment(request: Request, backends: Using, message_id: str, number: int) -> Response:
    try:
        _who(request, backends)
    except _LoginNeeded:
        return _to_login()
    record = actions.find_all(backends.store, message_id)[0]
    try:
        part = json.loads(record.payload or b"{}")["attachments"][number]
        content = base64.b64decode(part["content"])
    except (ValueError, TypeError, KeyError, IndexError):
        return Response("no such attachment", 404, media_type="text/plain")
    # Always a download, never rendered: an attachment is the sender's content, not ours to display.
    return Response(content, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="attachment-{number}"'})  # fmt: skip


@router.get("/m/{message_id}/raw")
def raw(request: Request, backends: Using, message_id: str) -> Response:
    try:
        _who(request, backends)
    except _LoginNeeded:
        return _to_login()
    queue_id = actions.find_all(backends.store, message_id)[0].queue_id
    try:
        content = raw_message(backends.bus, retention_of(backends.settings.bus), queue_id)
    except RawMessageNotFound as exc:
        return Response(str(exc), 404, media_type="text/plain")
    return Response(content, media_type="message/rfc822",
                    headers={"Content-Disposition": f'attachment; filename="{queue_id}.eml"'})  # fmt: skip


@router.post("/m/{message_id}/{action}")
def act(request: Request, backends: Using, message_id: str, action: str) -> Response:
    try:
        role = _who(request, backends)
    except _LoginNeeded:
        return _to_login()
    do = {"retry": actions.retry, "bypass": actions.bypass}.get(action)
    if do is None or role != "act":
        return Response("not allowed", 403, media_type="text/plain")
    try:
        do(backends.bus, backends.store, message_id, streams=backends.streams, requested_by="web")
    except actions.ActionPending:
        return RedirectResponse(f"/m/{message_id}?" + urlencode({"refused": "pending"}), status_code=303)
    except actions.ActionRefused:
        return RedirectResponse(f"/m/{message_id}?" + urlencode({"refused": action}), status_code=303)
    return RedirectResponse(f"/m/{message_id}?" + urlencode({"done": action}), status_code=303)
