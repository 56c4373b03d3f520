"""Settings of the online service (``ONLINE_*``) and the providers it calls.

Both are read once at start-up into frozen objects and passed down; nothing below ``__main__``
reads the environment. The providers' settings are the shared `providers.ProviderSettings`, one
per dependency of `PROVIDER_DEPENDENCIES`, read from ``FLOODGATE_<DEP>_BASE_URL`` / ``_API_KEY`` /
``_MODEL`` (unset: the local simulator); pointing the service at a real provider is a change of
variables, never of code.
"""

from __future__ import annotations

from pathlib import Path

from chassis import BaseServiceSettings
from pydantic import Field

__all__ = ["PROVIDER_DEPENDENCIES", "OnlineSettings"]

#: The HTTP dependencies of the online service, as named in the budget file.
PROVIDER_DEPENDENCIES = ("llm", "embed", "rerank", "search")


class OnlineSettings(BaseServiceSettings):
    port: int = Field(default=8081, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")
    #: dynamic shares (docs/budget.md, "Dynamic shares"): register in the database and divide each
    #: provider's global limit by the live online processes; off: the budget's replicas x workers
    membership: bool = True
