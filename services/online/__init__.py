"""The online service: shadowHunter, nexusAssess and dealBrain, answering while a user waits.

Each endpoint fans out to rate-limited, costly providers (LLM, web search, embeddings, rerank) and
PostgreSQL under the budgets of ``config/budget.toml``: a per-request fan-out limit, a per-process
gate per dependency, a deadline per request, and a failure policy per endpoint (which steps may
fall back, which fail the request). Run it with ``python -m services.online``.
"""

from ._admission import SHAPES as _SHAPES
from ._admission import EndpointCapacity, endpoint_capacity
from ._openapi import build_openapi
from ._wiring import open_downstreams
from .app import OnlineState, create_app, online_state
from .settings import OnlineSettings

#: The endpoints whose admission doors this service sizes from the budget.
ENDPOINTS: tuple[str, ...] = tuple(_SHAPES)

__all__ = [
    "ENDPOINTS",
    "EndpointCapacity",
    "OnlineSettings",
    "OnlineState",
    "build_openapi",
    "create_app",
    "endpoint_capacity",
    "online_state",
    "open_downstreams",
]
