"""Settings of the ingest API (``INGEST_API_*``) and the ingest worker (``INGEST_WORKER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from chassis import BaseServiceSettings

__all__ = ["IngestApiSettings", "IngestWorkerSettings"]


class IngestApiSettings(BaseServiceSettings):
    port: int = Field(default=8082, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")


class IngestWorkerSettings(BaseServiceSettings):
    """The worker serves only probes and metrics on its port."""

    port: int = Field(default=8083, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")
