"""Where each provider answers, with which key and model: one model, read from ``FLOODGATE_*``.

A provider is named by the dependency it stands for in the budget file (``llm``, ``embed``,
``rerank``, ``search``, ``fetch``) and configured by three environment variables,
``FLOODGATE_<DEP>_BASE_URL``, ``FLOODGATE_<DEP>_API_KEY`` and ``FLOODGATE_<DEP>_MODEL``: pointing
a service at a real provider instead of the simulator is a change of variables, never of code.
The cluster reads them (`load_provider_settings`) and hands them to its children
(`provider_environment`); each service reads the ones it calls the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

__all__ = [
    "DEFAULT_MODELS",
    "DEPENDENCIES",
    "SIMULATOR_BASE_URL",
    "ProviderSettings",
    "ProviderSettingsError",
    "api_keys",
    "base_urls",
    "load_provider_settings",
    "provider_environment",
]

#: Every provider a service may call, by the dependency it stands for in the budget file.
DEPENDENCIES = ("llm", "embed", "rerank", "search", "fetch")

#: Model names the simulator answers to (it accepts any; these are what the services ask for).
DEFAULT_MODELS = {
    "llm": "sim-chat-1",
    "embed": "sim-embed-384",
    "rerank": "sim-rerank-1",
    "search": "",
    "fetch": "",
}

#: The local simulator (services/simulator), where providers answer unless told otherwise.
SIMULATOR_BASE_URL = "http://127.0.0.1:8090"

_FIELDS = ("base_url", "api_key", "model")


class ProviderSettingsError(ValueError):
    """A provider variable is invalid; the message is one line that names the variable."""


class ProviderSettings(BaseModel):
    """Where one provider answers (``base_url``; the clients append ``/v1/...``), with which
    ``api_key`` (empty: none) and ``model``. Immutable; its repr never shows the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    api_key: str = ""
    model: str = ""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8090")
        return value.rstrip("/")

    def __repr__(self) -> str:
        # Never print a key: settings end up in logs and tracebacks.
        key = "set" if self.api_key else "none"
        return f"ProviderSettings(base_url={self.base_url!r}, model={self.model!r}, key={key})"

    __str__ = __repr__


def _env_name(dependency: str, field: str) -> str:
    """``FLOODGATE_<DEP>_<FIELD>``, e.g. ``FLOODGATE_LLM_BASE_URL``."""
    return f"FLOODGATE_{dependency.upper()}_{field.upper()}"


def load_provider_settings(
    dependencies: Iterable[str],
    *,
    environ: Mapping[str, str] | None = None,
    default_base_url: str | None = SIMULATOR_BASE_URL,
) -> dict[str, ProviderSettings]:
    """Read the settings of ``dependencies`` from ``FLOODGATE_<DEP>_BASE_URL`` / ``_API_KEY`` /
    ``_MODEL`` (``environ`` defaults to the process environment).

    An empty variable counts as unset (the cluster passes every variable, some empty). An unset
    base URL is ``default_base_url``; with ``default_base_url=None`` a provider whose base URL is
    unset is left out of the result, for a process that may run without it. An unset model is the
    simulator's (`DEFAULT_MODELS`). Raises `ProviderSettingsError` naming the first bad variable.
    """
    env = os.environ if environ is None else environ
    providers: dict[str, ProviderSettings] = {}
    for dep in dependencies:
        values = {field: value for field in _FIELDS if (value := env.get(_env_name(dep, field), ""))}
        values.setdefault("model", DEFAULT_MODELS.get(dep, ""))
        if "base_url" not in values:
            if default_base_url is None:
                continue
            values["base_url"] = default_base_url
        try:
            providers[dep] = ProviderSettings.model_validate(values)
        except ValidationError as exc:
            raise ProviderSettingsError(_describe(exc, dep, values)) from None
    return providers


def _describe(exc: ValidationError, dependency: str, values: Mapping[str, str]) -> str:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    got = f" (got {values[field]!r})" if field in values else ""
    message = err["msg"].removeprefix("Value error, ")
    return f"{_env_name(dependency, field)}: {message}{got}"


def provider_environment(providers: Mapping[str, ProviderSettings]) -> dict[str, str]:
    """The variables that make `load_provider_settings` read ``providers`` back (for a child
    process): three per provider, the key empty when there is none."""
    return {
        _env_name(dep, field): getattr(settings, field)
        for dep, settings in providers.items()
        for field in _FIELDS
    }


def base_urls(providers: Mapping[str, ProviderSettings]) -> dict[str, str]:
    """Dependency -> base URL (``floodgate.Dependencies.from_budget(http_base_urls=...)``)."""
    return {dep: settings.base_url for dep, settings in providers.items()}


def api_keys(providers: Mapping[str, ProviderSettings]) -> dict[str, str]:
    """Dependency -> API key, for the providers that have one (``from_budget(api_keys=...)``)."""
    return {dep: settings.api_key for dep, settings in providers.items() if settings.api_key}
