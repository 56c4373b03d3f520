"""What an endpoint's logic receives: the app-lifetime providers and the request-lifetime context.

`Downstreams` is built once per process (`services.online._wiring`) and stored on the app;
`RequestContext` is built per request by the route and dropped with it. Endpoint functions take
both explicitly, so a test can hand them fakes without an app.
"""

from __future__ import annotations

from dataclasses import dataclass

import floodgate
from providers import ChatModel, Embedder, Reranker, WebSearch

from ._chunks import ChunkSearch
from ._timing import ServerTiming

__all__ = ["Downstreams", "RequestContext"]


@dataclass(frozen=True)
class Downstreams:
    llm: ChatModel
    embedder: Embedder
    reranker: Reranker
    web: WebSearch
    chunks: ChunkSearch


@dataclass(frozen=True)
class RequestContext:
    tenant: str
    #: the endpoint's name in the budget file; the providers label the tokens a call uses with it
    endpoint: str
    policy: floodgate.EndpointPolicy
    timing: ServerTiming
    degradations: floodgate.Degradations
    #: seconds of the request deadline a degradable step leaves for answering with its fallback
    reserve: float
