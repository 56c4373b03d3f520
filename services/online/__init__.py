"""The online service: shadowHunter, nexusAssess and dealBrain, answering while a user waits.

Each endpoint fans out to rate-limited, costly providers (LLM, web search, embeddings, rerank) and
PostgreSQL under the budgets of ``config/budget.toml``: a per-request fan-out limit, a per-process
gate per dependency, a deadline per request, and a failure policy per endpoint (which steps may
fall back, which fail the request). Each endpoint is one record in `ENDPOINTS` (`Endpoint`), from
which its route, door, OpenAPI operation and gateway cluster are derived. Run it with
``python -m services.online``.
"""

from ._admission import EndpointCapacity, endpoint_capacity
from ._endpoints import ENDPOINTS, Endpoint
from ._openapi import build_openapi
from ._wiring import open_downstreams
from .app import OnlineState, create_app, online_state
from .settings import OnlineSettings

__all__ = [
    "ENDPOINTS",
    "Endpoint",
    "EndpointCapacity",
    "OnlineSettings",
    "OnlineState",
    "build_openapi",
    "create_app",
    "endpoint_capacity",
    "online_state",
    "open_downstreams",
]
