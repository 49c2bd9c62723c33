"""The HTTP API (role ``api``): the activity log, operator actions and health, over HTTP.

Input: HTTP requests with a bearer token from ``[http] tokens`` (read and act)
or ``[http] read_only_tokens`` (read only); ``/healthz``, ``/readyz`` and
``/openapi.json`` need none. Output: JSON documented in ``/openapi.json``
(FastAPI generates it from the handlers and :mod:`inbound.web.models`), every
error as problem details (:mod:`inbound.web.problems`).

It reads the activity store and writes only to the bus, like the CLI: a retry
is :func:`inbound.ops.actions.retry`, a pause :func:`inbound.control.set_paused`,
so the API can run on any host that reaches the bus and the store. The
handlers are plain functions: FastAPI runs them on its thread pool, because
the store and the bus block.

Listing is newest first with an opaque cursor (the position of the last
record returned), so paging is stable while new mail arrives: new records sort
before the first page, never into a later one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from ..clock import rfc3339
from ..control import set_paused
from ..events import Status
from ..ops import actions
from ..ops.rawmessage import RawMessageNotFound, raw_message, retention_of
from ..ops.status import collect
from . import pages, problems
from .backends import Backends, Using, access, decode_cursor, encode_cursor
from .bodylimit import BodyLimit
from .exposition import CONTENT_TYPE, exposition
from .models import (
    Accepted,
    DayCounts,
    Health,
    MessageDetail,
    MessageOut,
    MessagePage,
    QueuedMessage,
    Replayed,
    ReplayRequest,
    Stats,
    StatusOut,
    StreamPaused,
)
from .problems import Problem, documented

MAX_PAGE = 500
MAX_DAYS = 366

_bearer = HTTPBearer(auto_error=False, description="A token from [http] tokens or read_only_tokens.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authorize(backends: Backends, credentials: HTTPAuthorizationCredentials | None, *, act: bool) -> None:
    if credentials is None:
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    allowed = access(backends.settings, credentials.credentials)
    if allowed is None:
        raise Problem(401, "Unauthorized", "unknown token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if act and allowed != "act":
        raise Problem(403, "Forbidden", "this token may only read")


def _reader(backends: Using, credentials: Credentials) -> None:
    _authorize(backends, credentials, act=False)


def _actor(backends: Using, credentials: Credentials) -> None:
    _authorize(backends, credentials, act=True)


def as_utc_text(moment: datetime | None, name: str) -> str | None:
    """*moment* as the store writes times (RFC 3339, UTC, milliseconds), so text order is time order."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise Problem(400, "Bad Request", f"{name} needs a time zone (for example 2026-11-22T10:00:00Z)")
    try:
        return rfc3339(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        raise Problem(400, "Bad Request", f"{name} is out of range") from None


health = APIRouter(tags=["health"])
reading = APIRouter(dependencies=[Depends(_reader)], responses=documented(401, 422, 503))
acting = APIRouter(dependencies=[Depends(_actor)], responses=documented(401, 403, 404, 422, 503), tags=["actions"])


@health.get("/healthz")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@health.get("/readyz", responses=documented(503))
def readyz(backends: Using, response: Response) -> Health:
    """The data directory, the bus and the activity store can be used."""
    checks: dict[str, Callable[[], object]] = {
        "data_dir": backends.settings.data.check,
        "bus": lambda: backends.bus.lag("record", "events"),
        "store": backends.store.oldest_waiting,
    }
    results = {}
    for name, probe in checks.items():
        try:
            probe()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 -- any failure means not ready; the text says which
            results[name] = f"failing: {exc}"
    ready = all(v == "ok" for v in results.values())
    response.status_code = 200 if ready else 503
    return Health(status="ok" if ready else "unavailable", checks=results)


@reading.get("/v1/messages", tags=["messages"], responses=documented(400, 404))
def list_messages(
    backends: Using,
    *,
    status: Status | None = None,
    stream: str | None = None,
    q: Annotated[str | None, Query(description="Words in the subject, sender or recipients.")] = None,
    sender: str | None = None,
    recipient: str | None = None,
    since: Annotated[datetime | None, Query(description="Received at or after (RFC 3339).")] = None,
    until: Annotated[datetime | None, Query(description="Received before (RFC 3339).")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> MessagePage:
    """Messages, newest first, a page at a time."""
    records = backends.store.list(
        status=status,
        stream=backends.known_stream(stream),
        text=q,
        sender=sender,
        recipient=recipient,
        since=as_utc_text(since, "since"),
        until=as_utc_text(until, "until"),
        after=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,  # one more tells whether there is a next page
    )
    page = records[:limit]
    next_cursor = encode_cursor(page[-1].position) if len(records) > limit else None
    return MessagePage(items=[MessageOut.of(r) for r in page], next_cursor=next_cursor)


@reading.get("/v1/messages/{message_id}", tags=["messages"], responses=documented(404))
def get_message(backends: Using, message_id: str) -> MessageDetail | QueuedMessage:
    """A delivery with its payload and attempts; for a queue id, every stream's delivery of that message."""
    found = backends.deliveries_of(message_id)
    if found[0].delivery_id == message_id:
        return MessageDetail.of(found[0])
    return QueuedMessage(queue_id=message_id, deliveries=[MessageDetail.of(r) for r in found])


@reading.get(
    "/v1/messages/{message_id}/raw",
    response_class=Response,
    tags=["messages"],
    responses={200: {"content": {"message/rfc822": {}}, "description": "The message as received."}, **documented(404)},
)
def get_raw(backends: Using, message_id: str) -> Response:
    """The message as it was received, while the bus retains it (``[bus] retention``)."""
    queue_id = backends.deliveries_of(message_id)[0].queue_id
    try:
        message = raw_message(backends.bus, retention_of(backends.settings.bus), queue_id)
    except RawMessageNotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from None
    disposition = f'attachment; filename="{queue_id}.eml"'
    return Response(message, media_type="message/rfc822", headers={"Content-Disposition": disposition})


@acting.post("/v1/messages/{message_id}/retry", status_code=202, responses=documented(409))
def retry(backends: Using, message_id: str) -> Accepted:
    """Send a failed delivery again, as its next generation (the same webhook-id)."""
    generation = actions.retry(
        backends.bus, backends.store, backends.delivery_id(message_id), streams=backends.streams, requested_by="api"
    )
    return Accepted(delivery_id=message_id, generation=generation)


@acting.post("/v1/messages/{message_id}/bypass", status_code=202, responses=documented(409))
def bypass(backends: Using, message_id: str) -> Accepted:
    """Deliver a blocked message after all: process it again past its stream's block rules."""
    generation = actions.bypass(
        backends.bus, backends.store, backends.delivery_id(message_id), streams=backends.streams, requested_by="api"
    )
    return Accepted(delivery_id=message_id, generation=generation)


async def _replay_request(request: Request, _: Annotated[None, Depends(_actor)]) -> ReplayRequest:
    """The body, read and validated once the token may act.

    Declared as a body parameter, FastAPI would read and parse it before any dependency ran: an
    anonymous caller would learn from a 422 what shape it should have.
    """
    try:
        return ReplayRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


_REPLAY_BODY = {"required": True, "content": {"application/json": {"schema": ReplayRequest.model_json_schema()}}}


@acting.post("/v1/replay", status_code=202, responses=documented(400), openapi_extra={"requestBody": _REPLAY_BODY})
def replay(backends: Using, request: Annotated[ReplayRequest, Depends(_replay_request)]) -> Replayed:
    """Send a stream's final messages received in [since, until) again, each with its own webhook-id."""
    window = actions.replay_window(
        backends.store,
        str(backends.known_stream(request.stream)),
        str(as_utc_text(request.since, "since")),
        as_utc_text(request.until, "until"),
        request.status,
    )
    done = actions.replay(backends.bus, backends.store, window, requested_by="api")
    sent = [r.delivery_id for r in window if r.delivery_id in done.generations]
    return Replayed(count=len(sent), delivery_ids=sent, not_sent=done.not_sent)


@acting.post("/v1/streams/{name}/pause", status_code=202)
def pause_stream(backends: Using, name: str) -> StreamPaused:
    """Hold this stream's deliveries (its messages are parsed and wait as processed)."""
    return _set_paused(backends, name, True)


@acting.post("/v1/streams/{name}/resume", status_code=202)
def resume_stream(backends: Using, name: str) -> StreamPaused:
    """Let this stream's deliveries go again."""
    return _set_paused(backends, name, False)


def _set_paused(backends: Backends, name: str, paused: bool) -> StreamPaused:
    backends.known_stream(name)
    set_paused(backends.bus, name, paused)
    return StreamPaused(stream=name, paused=paused)


@reading.get("/v1/stats", tags=["status"], responses=documented(404))
def stats(backends: Using, stream: str | None = None, days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 30) -> Stats:
    """How many messages were received per UTC day, by status: today and the days before it."""
    first = datetime.now(UTC).date() - timedelta(days=days - 1)
    since = f"{first.isoformat()}T00:00:00.000Z"
    counts = backends.store.count_by_day(since=since, stream=backends.known_stream(stream))
    dates = [(first + timedelta(days=n)).isoformat() for n in range(days)]
    return Stats(
        stream=stream, days=[DayCounts(date=d, counts={s: counts.get((d, s), 0) for s in Status}) for d in dates]
    )


@reading.get(
    "/metrics",
    response_class=Response,
    tags=["status"],
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
)
def prometheus_metrics(backends: Using) -> Response:
    """Prometheus metrics: every process on this data directory, summed (see the README's list)."""
    return Response(exposition(backends.settings, backends.bus, backends.store), media_type=CONTENT_TYPE)


@reading.get("/v1/status", tags=["status"])
def status(backends: Using) -> StatusOut:
    """Backlogs at each stage (this host's spool and outbox), bus lag, paused streams, counts by status."""
    report = collect(backends.settings, backends.bus, backends.store)
    return StatusOut(**asdict(report), backlog=report.backlog, counts=backends.store.count_by_status())


def create_app(backends: Backends) -> FastAPI:
    app = FastAPI(
        title="inbound",
        summary="Inbound email: the activity log, operator actions and health.",
        version="1",
        docs_url=None,  # the interactive pages load scripts from a CDN; /openapi.json is what clients need
        redoc_url=None,
        responses=documented(500),
    )
    app.state.backends = backends
    app.add_middleware(BodyLimit)
    problems.install(app)
    for router in (health, reading, acting, pages.router):
        app.include_router(router)
    return app
