"""Request helpers shared by handlers: the tenant the gateway set, and a validated JSON body."""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from ._app import TENANT_HEADER
from ._errors import ApiError

__all__ = ["TENANT_PATTERN", "is_valid_tenant", "parse_body", "require_tenant"]

M = TypeVar("M", bound=BaseModel)

#: The one rule for a tenant id: a letter or digit, then up to 63 letters, digits, ``_``, ``.``
#: or ``-``. The gateway's keys file is checked against it (cluster/api_keys.py), every service
#: accepts exactly it in ``x-floodgate-tenant``, and the OpenAPI documents state it.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def is_valid_tenant(tenant: str) -> bool:
    """Whether ``tenant`` is a well-formed tenant id (what `require_tenant` accepts); for code that
    reads the header before the framework does, such as an ASGI middleware."""
    return _TENANT_RE.match(tenant) is not None


def require_tenant() -> str:
    """The tenant set by the gateway. A service never takes a tenant from the request body."""
    tenant = request.headers.get(TENANT_HEADER)
    if not tenant:
        raise ApiError(401, "missing_tenant", f"the {TENANT_HEADER} header (set by the gateway) is missing")
    if not is_valid_tenant(tenant):
        raise ApiError(400, "invalid_tenant", f"the {TENANT_HEADER} header is not a valid tenant id")
    return tenant


async def parse_body(model: type[M]) -> M:
    """Read the body as JSON and validate it; 400 for bad JSON, 422 naming each offending field."""
    raw = await request.get_data(cache=True)
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = {"line": exc.lineno, "column": exc.colno} if isinstance(exc, json.JSONDecodeError) else None
        raise ApiError(
            400, "invalid_json", f"request body is not valid JSON: {exc}", details=detail
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "(body)",
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        names = ", ".join(f["field"] for f in fields)
        raise ApiError(422, "invalid_request", f"invalid field(s): {names}", details=fields) from None
