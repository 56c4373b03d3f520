"""The providers the services call — LLM, embeddings, rerank, web search, fetch — in one place.

* settings: `ProviderSettings` (base URL, API key, model) per provider, read from
  ``FLOODGATE_<DEP>_BASE_URL`` / ``_API_KEY`` / ``_MODEL`` by `load_provider_settings`;
* clients, one per wire format, each over a guarded ``floodgate.Dependency`` (so nothing here
  waits unbounded or retries on its own): `ChatModel` (OpenAI chat completions), `Embedder`
  (OpenAI embeddings), `Reranker` (Cohere/Jina rerank), `WebSearch` (Brave-style search),
  `Fetcher` (document fetch). An answer that does not parse is `MalformedAnswer`, a
  `floodgate.DependencyError`;
* usage: the tokens each answer reports (`TokenUsage`), reported to a `UsageSink` the caller
  hands in; `UsageMetrics` is the one the services use (token and cost counters, and the
  request being served: `metering_request`, whose `RequestUsage` the online service reports
  to the gateway in response headers);
* vectors: an embedding's forms on the way to and from pgvector (`encode_vector`,
  `decode_vector`, `vector_literal`) and the width of the chunks table (`EMBEDDING_DIMENSIONS`).

The toolkit (``floodgate``) knows no provider's wire format; the services and the cluster import
this package.
"""

from ._chat import ChatModel, task_prompt
from ._client import DependencyClient, MalformedAnswer, Memo
from ._embeddings import Embedder
from ._fetch import FetchedDocument, Fetcher
from ._rerank import Reranker
from ._search import WebHit, WebSearch
from ._settings import (
    DEFAULT_MODELS,
    DEPENDENCIES,
    SIMULATOR_BASE_URL,
    ProviderSettings,
    ProviderSettingsError,
    api_keys,
    base_urls,
    load_provider_settings,
    provider_environment,
)
from ._usage import (
    UNKNOWN_ENDPOINT,
    USAGE_COST_HEADER,
    USAGE_TOKENS_HEADER,
    RequestUsage,
    TokenUsage,
    UsageMetrics,
    UsageSink,
    metering_request,
    read_usage,
)
from ._vectors import EMBEDDING_DIMENSIONS, decode_embedding, decode_vector, encode_vector, vector_literal

__all__ = [
    "DEFAULT_MODELS",
    "DEPENDENCIES",
    "EMBEDDING_DIMENSIONS",
    "SIMULATOR_BASE_URL",
    "UNKNOWN_ENDPOINT",
    "USAGE_COST_HEADER",
    "USAGE_TOKENS_HEADER",
    "ChatModel",
    "DependencyClient",
    "Embedder",
    "FetchedDocument",
    "Fetcher",
    "MalformedAnswer",
    "Memo",
    "ProviderSettings",
    "ProviderSettingsError",
    "RequestUsage",
    "Reranker",
    "TokenUsage",
    "UsageMetrics",
    "UsageSink",
    "WebHit",
    "WebSearch",
    "api_keys",
    "base_urls",
    "decode_embedding",
    "decode_vector",
    "encode_vector",
    "load_provider_settings",
    "metering_request",
    "provider_environment",
    "read_usage",
    "task_prompt",
    "vector_literal",
]
