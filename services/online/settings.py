"""Settings of the online service: its own (``ONLINE_*``) and the providers it calls (``FLOODGATE_*``).

Both are read once at start-up into frozen objects and passed down; nothing below ``__main__``
reads the environment. Providers are named by the dependency they stand for in the budget file
(llm, embed, rerank, search), so pointing the service at a real provider instead of the simulator
is a change of ``FLOODGATE_LLM_BASE_URL`` / ``_API_KEY`` / ``_MODEL``, never of code.
"""

from __future__ import annotations

from pathlib import Path

from chassis import BaseServiceSettings
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PROVIDER_DEPENDENCIES", "OnlineSettings", "ProviderSettings"]

#: The HTTP dependencies of the online service, as named in the budget file.
PROVIDER_DEPENDENCIES = ("llm", "embed", "rerank", "search")

_SIMULATOR = "http://127.0.0.1:8090"


class OnlineSettings(BaseServiceSettings):
    port: int = Field(default=8081, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")


class ProviderSettings(BaseModel):
    """Where each provider answers, with which key and model (environment ``FLOODGATE_<DEP>_<FIELD>``).

    The defaults point at the local simulator (services/upstreams); keys may stay empty for it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    llm_base_url: str = _SIMULATOR
    llm_api_key: str = ""
    llm_model: str = "sim-chat-1"
    embed_base_url: str = _SIMULATOR
    embed_api_key: str = ""
    embed_model: str = "sim-embed-384"
    rerank_base_url: str = _SIMULATOR
    rerank_api_key: str = ""
    rerank_model: str = "sim-rerank-1"
    search_base_url: str = _SIMULATOR
    search_api_key: str = ""

    def base_urls(self) -> dict[str, str]:
        return {dep: getattr(self, f"{dep}_base_url") for dep in PROVIDER_DEPENDENCIES}

    def api_keys(self) -> dict[str, str]:
        return {dep: key for dep in PROVIDER_DEPENDENCIES if (key := getattr(self, f"{dep}_api_key"))}

    def __repr__(self) -> str:
        # Never print keys: settings objects end up in logs and tracebacks.
        urls = ", ".join(f"{dep}={url}" for dep, url in self.base_urls().items())
        return f"ProviderSettings({urls}, keys={sorted(self.api_keys())})"

    __str__ = __repr__
