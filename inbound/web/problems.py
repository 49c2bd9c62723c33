"""Every error the HTTP API returns, as ``application/problem+json`` (RFC 9457).

One shape for every failure, whoever raised it: a handler's :class:`Problem`,
FastAPI's request validation, Starlette's 404/405, an unknown message id (404),
an operator action that does not apply (:class:`ActionRefused`, 409), a store or bus that is down
(:class:`TemporaryError`, 503 with ``Retry-After``: the same request may work
later) and anything unexpected (500, without the exception's text: it may hold
message content). Clients branch on ``status`` and ``type``; ``detail`` is a
sentence for a person.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..errors import TemporaryError
from ..ops.actions import ActionRefused, UnknownMessage

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Of the errors raised as Starlette's HTTPException: its own, and .bodylimit's.
TITLES = {404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}
RETRY_AFTER_SECONDS = 5


class ProblemBody(BaseModel):
    """RFC 9457 problem details; ``errors`` lists what was wrong with the request (422)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    """Raise in a handler to answer with a problem."""

    def __init__(self, status: int, title: str, detail: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ProblemBody(title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status, dict(headers or {}), media_type=MEDIA_TYPE)


#: The ``responses=`` entry that documents a problem status in the OpenAPI document.
def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ProblemBody, "content": {MEDIA_TYPE: {}}, "description": "Problem details (RFC 9457)"}
        for status in statuses
    }


def install(app: FastAPI) -> None:
    """Answer every error of *app* with problem details."""

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.title, exc.detail, exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        title = TITLES.get(exc.status_code, "HTTP error")
        return problem_response(exc.status_code, title, str(exc.detail), exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem_response(422, "Invalid request", "see errors", errors=errors)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, UnknownMessage):
            return problem_response(404, "Not Found", str(exc))
        return problem_response(409, "Conflict", str(exc))

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("api: %s %s: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return problem_response(503, "Service Unavailable", "the activity store or the bus is unavailable", headers)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api: %s %s failed", request.method, request.url.path)
        return problem_response(500, "Internal Server Error", "see the service's log")

    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ActionRefused, refused)
    app.add_exception_handler(TemporaryError, unavailable)
    app.add_exception_handler(Exception, crashed)
