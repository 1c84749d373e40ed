"""Domain errors of the inference core and the one place that maps them to HTTP answers."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] = {}

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict:
        detail = {"msg": self.message, "type": type(self).__name__}
        if self.field:
            detail["loc"] = ["body", self.field]
        return {"detail": [detail]}


class InvalidInput(ServiceError):
    status_code = 422


class UnknownScenario(InvalidInput):
    pass


class PayloadTooLarge(ServiceError):
    status_code = 413


class QueueFull(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after_seconds: int = 1):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class DeadlineExceeded(ServiceError):
    status_code = 503


class NotReady(ServiceError):
    status_code = 503


class ArtifactError(ServiceError):
    """A model artifact is missing, malformed or fails its checks."""

    status_code = 409
