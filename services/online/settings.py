"""Settings of the online service (environment variables ``ONLINE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from chassis import BaseServiceSettings

__all__ = ["OnlineSettings"]


class OnlineSettings(BaseServiceSettings):
    port: int = Field(default=8081, ge=0, le=65535)
    database_url: str = "postgresql://postgres@127.0.0.1:5433/floodgate"
    budget_file: Path = Path("config/budget.toml")
