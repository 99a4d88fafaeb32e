"""Every refusal in one shape, RFC 9457 problem details, and an OpenAPI document that says so.

FastAPI answers a validation error with ``detail`` as a list and documents that shape, while its
``HTTPException`` answers ``detail`` as a string: clients had to handle both, and the document described
neither truthfully. Here every 4xx is a ``Problem`` (``detail`` always one string, field errors in
``errors``), the document's 4xx answers all point at it, and errors only the store notices (a value past
a column's size that slipped past validation) are the client's 4xx rather than a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException

from corral.api_models import FieldError, Problem
from corral.limits import MAX_REQUEST_BYTES
from corral.spec.validation import describe, format_loc

audit = logging.getLogger("corral.audit")

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
DOCUMENTED = {
    400: "The body could not be read (not UTF-8, or not the declared content type).",
    401: "No API token, or one that is not recognised.",
    403: "The caller's role or tenant may not do this.",
    413: f"The body is larger than {MAX_REQUEST_BYTES >> 20} MiB.",
    422: "The request is invalid: `detail` says why; `errors` lists each wrong field and the fix.",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def problem(
    status: int, detail: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every refusal as a ``Problem`` and document it so; refuse oversized bodies (413)."""
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _does_not_fit)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _conflicts)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        FieldError(
            field=format_loc(tuple(e["loc"][1:] if e["loc"][:1] == ("body",) else e["loc"])),
            message=describe(e),
        )
        for e in exc.errors()
    ]
    return problem(422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors)


async def _refused(_: Request, exc: HTTPException) -> JSONResponse:
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


async def _does_not_fit(request: Request, exc: DataError) -> JSONResponse:
    audit.warning("refused %s %s: the store rejected a value: %s", request.method, request.url.path, exc.orig)
    return problem(422, "a value does not fit the store (too long or too large): check names and numbers")


async def _conflicts(request: Request, exc: IntegrityError) -> JSONResponse:
    audit.warning("refused %s %s: conflicting write: %s", request.method, request.url.path, exc.orig)
    return problem(409, "the change conflicts with what the store holds (it exists already, or was taken)")


def document_problems(document: dict[str, Any]) -> None:
    """Make the OpenAPI document say what is sent: every 4xx a ``Problem``; 422 wherever a request has
    parameters or a body, 400 and 413 wherever it has a body, 401 and 403 wherever it needs a token."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            codes: list[int] = []
            if operation.get("parameters") or "requestBody" in operation:
                codes.append(422)
            if "requestBody" in operation:
                codes += [400, 413]
            if operation.get("security"):
                codes += [401, 403]
            for code in codes:
                answers.setdefault(str(code), {"description": DOCUMENTED[code]})
            for code, answer in answers.items():
                if code.startswith("4"):
                    answer["content"] = {"application/json": {"schema": PROBLEM_REF}}


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with a 413, by its Content-Length before it is read, or
    as it arrives when it has none (chunked): a client cannot make the server buffer gigabytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the body is larger than {self.limit} bytes"
        await problem(413, detail)(scope, receive, send)


class _TooLarge(Exception):
    """A chunked body passed the limit while it was read."""
