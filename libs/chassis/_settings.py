"""Settings: read once from the environment at start-up, validated into a frozen object.

A service declares a pydantic model; ``load_settings`` reads ``PREFIX_FIELD`` variables for it and
turns any validation failure into one ``SettingsError`` line naming the variable and the problem,
which the process prints before exiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["BaseServiceSettings", "SettingsError", "load_settings"]

S = TypeVar("S", bound=BaseModel)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""


class BaseServiceSettings(BaseModel):
    """Fields every service has. Subclasses add their own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    grace_period: float = Field(default=10.0, ge=0, description="seconds to finish in-flight requests")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=1_048_576, gt=0)


def load_settings(model: type[S], prefix: str, environ: Mapping[str, str] | None = None) -> S:
    """Build ``model`` from ``{prefix}{FIELD}`` variables; unknown ``prefix`` variables are ignored."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for name in model.model_fields:
        var = f"{prefix}{name.upper()}"
        if var in env:
            raw[name] = env[var]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            var = f"{prefix}{field.split('.')[0].upper()}"
            given = raw.get(field.split(".")[0])
            got = f" (got {given!r})" if given is not None else ""
            problems.append(f"{var}: {err['msg']}{got}")
        raise SettingsError("; ".join(problems)) from None
