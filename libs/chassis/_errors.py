"""The service edge's error contract.

Every error a service returns is JSON of one shape::

    {"error": {"code": "...", "message": "...", "details": ...}}

``ApiError`` is what handlers raise for a client mistake or a refusal; toolkit errors
(``floodgate.FloodgateError``) are mapped by the chassis itself, so handlers let them propagate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["ApiError", "error_payload", "exception_leaves"]


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable ``code`` and a message for humans.

    ``details`` is any JSON-serialisable value (for validation errors: the offending fields);
    ``headers`` are added to the response (for example ``Retry-After``, whose value is
    ``floodgate.retry_after_seconds``: the one rounding rule).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        return error_payload(self.code, self.message, self.details)

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r})"


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def exception_leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, with exception groups (nurseries wrap errors in them) taken
    apart, depth first; ``exc`` itself when it is not a group."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from exception_leaves(inner)
    else:
        yield exc
