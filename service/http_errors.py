"""The one table from domain errors to HTTP answers, and the error body every route documents.

Routes, middleware and the request validator all answer errors through `error_response` or
`send_error`, so a status code is written in exactly one place."""

from __future__ import annotations

from typing import Callable

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from service.errors import (
    ArtifactError,
    DeadlineExceeded,
    Forbidden,
    InvalidFields,
    InvalidInput,
    MalformedBody,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    StoreUnavailable,
    Unauthenticated,
)


class ErrorDetail(BaseModel):
    loc: list[str | int] = []
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorDetail]


def _no_headers(error: ServiceError) -> dict[str, str]:
    return {}


def _retry_after(error: ServiceError) -> dict[str, str]:
    return {"Retry-After": str(getattr(error, "retry_after_seconds", 1))}


def _close(error: ServiceError) -> dict[str, str]:
    # the rest of the request may still be on its way: drop the connection rather than read it
    return {"Connection": "close"}


# Most specific class first: the first match wins.
HTTP_ERRORS: tuple[tuple[type[ServiceError], int, Callable[[ServiceError], dict[str, str]]], ...] = (
    (MalformedBody, 422, _no_headers),
    (InvalidInput, 422, _no_headers),
    (PayloadTooLarge, 413, _close),
    (RequestTimeout, 408, _close),
    (Unauthenticated, 401, lambda error: {"WWW-Authenticate": "Bearer"}),
    (Forbidden, 403, _no_headers),
    (Overloaded, 429, _retry_after),
    (DeadlineExceeded, 503, _retry_after),
    (NotReady, 503, _retry_after),
    (StoreUnavailable, 503, _retry_after),
    (ArtifactError, 409, _no_headers),
)


def status_of(error: ServiceError) -> tuple[int, dict[str, str]]:
    for error_class, status, headers in HTTP_ERRORS:
        if isinstance(error, error_class):
            return status, headers(error)
    return 500, {}


def _printable(text: str) -> str:
    """Text that encodes as UTF-8 whatever a client sent (lone surrogates come back escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_detail(message: str, error_type: str, loc: list | tuple = ()) -> dict:
    return {"loc": [_printable(p) if isinstance(p, str) else p for p in loc], "msg": _printable(message),
            "type": error_type}


def error_body(error: ServiceError) -> dict:
    if isinstance(error, InvalidFields):
        return {"detail": [error_detail(d["msg"], d["type"], d["loc"]) for d in error.details]}
    # `field` is a dotted path inside the body, "body" the body as a whole, "header.<Name>" a header
    if not error.field:
        loc = []
    elif error.field == "body" or error.field.startswith("header."):
        loc = error.field.split(".", 1)
    else:
        loc = ["body", *error.field.split(".")]
    return {"detail": [error_detail(error.message, type(error).__name__, loc)]}


def json_response(body: dict, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_response(error: ServiceError) -> Response:
    status, headers = status_of(error)
    return json_response(error_body(error), status, headers)


def raw_http_answer(error: ServiceError, reason: str) -> bytes:
    """The whole HTTP/1.1 answer for `error` as bytes, for the HTTP server to write itself when it
    refuses a request before any ASGI code runs (`service.server`); the same status, headers and
    body as `error_response`."""
    status, headers = status_of(error)
    body = orjson.dumps(error_body(error))
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
             *(f"{name.lower()}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send_error(send, error: ServiceError) -> None:
    """The error answer over a raw ASGI `send` (for middleware, before any route runs)."""
    await error_response(error)(scope={"type": "http"}, receive=None, send=send)


def documented(*errors: type[ServiceError]) -> dict[int | str, dict]:
    """FastAPI `responses=` entries for the statuses these errors map to."""
    responses: dict[int | str, dict] = {}
    for error in errors:
        status = next(s for cls, s, _ in HTTP_ERRORS if issubclass(error, cls))
        entry = responses.setdefault(status, {"model": ErrorBody, "description": ""})
        entry["description"] = "; ".join(filter(None, [entry["description"], error.__doc__ and
                                                       error.__doc__.strip().splitlines()[0] or error.__name__]))
    return responses
