"""Domain errors of the inference core. Transport-neutral: they say what went wrong, never which HTTP
status that is; `service.http_errors` maps them to answers in one table."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    """The request is well-formed JSON but breaks a rule; `field` names where."""


class InvalidFields(InvalidInput):
    """Fields broke their rules; `details` lists {loc, msg, type} for each (loc starts at "body")."""

    def __init__(self, details: list[dict]):
        first = details[0] if details else {"msg": "invalid request", "loc": ()}
        super().__init__(first["msg"], ".".join(str(p) for p in first.get("loc", ())[1:]) or None)
        self.details = details


class MalformedBody(ServiceError):
    """The body is not JSON at all."""


class PayloadTooLarge(ServiceError):
    pass


class RequestTimeout(ServiceError):
    """The client did not send its whole request in time."""


class Unauthenticated(ServiceError):
    """No credentials where the route needs them."""


class Forbidden(ServiceError):
    """Credentials given, but wrong."""


class Overloaded(ServiceError):
    """Too much work queued; retry after `retry_after_seconds`."""

    def __init__(self, message: str, retry_after_seconds: int = 1):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DeadlineExceeded(ServiceError):
    pass


class NotReady(ServiceError):
    pass


class StoreUnavailable(ServiceError):
    """The feature store did not confirm a write; whether it happened is unknown."""


class ArtifactError(ServiceError):
    """A model artifact is missing, malformed, incompatible or fails its checks."""
