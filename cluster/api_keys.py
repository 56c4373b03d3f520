"""API keys -> tenants: the keys file ``make up`` reads, validated, and put into Envoy's config.

The file (``config/api_keys.yaml``, or the committed sample ``config/api_keys.sample.yaml`` when it
does not exist) maps tenants to their keys::

    tenants:
      acme:
        keys: [fg_live_..., fg_live_...]   # several keys per tenant: rotation without downtime

`load_api_keys` validates it once (errors name the entry); `apply_api_keys` replaces the
credentials of the ``envoy.filters.http.api_key_auth`` filter in a parsed Envoy config. Envoy does
the per-request work (lookup, 401, forwarding the tenant in ``x-floodgate-tenant``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chassis
import yaml

__all__ = [
    "API_KEYS_FILE",
    "API_KEYS_SAMPLE",
    "ApiKeys",
    "ApiKeysError",
    "apply_api_keys",
    "load_api_keys",
    "parse_api_keys",
    "resolve_api_keys_file",
]

_ROOT = Path(__file__).resolve().parent.parent  # the repository
API_KEYS_FILE = _ROOT / "config" / "api_keys.yaml"
API_KEYS_SAMPLE = _ROOT / "config" / "api_keys.sample.yaml"

_KEY = re.compile(r"^[!-~]{16,256}$")  # printable ASCII, no spaces
_API_KEY_AUTH = "envoy.filters.http.api_key_auth"


class ApiKeysError(ValueError):
    """The keys file is missing or invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class ApiKeys:
    """Validated keys: ``tenants`` maps each tenant to its keys (never logged: see ``__repr__``)."""

    source: Path
    tenants: Mapping[str, tuple[str, ...]]

    @property
    def is_sample(self) -> bool:
        return self.source.resolve() == API_KEYS_SAMPLE.resolve()

    def credentials(self) -> list[dict[str, str]]:
        """The ``credentials`` list of the api_key_auth filter: one ``{key, client}`` per key."""
        return [{"key": key, "client": tenant} for tenant, keys in self.tenants.items() for key in keys]

    def __repr__(self) -> str:
        count = sum(len(k) for k in self.tenants.values())
        return f"ApiKeys(source={str(self.source)!r}, tenants={sorted(self.tenants)}, keys={count})"


def resolve_api_keys_file(explicit: str | Path | None = None) -> Path:
    """``explicit`` (FLOODGATE_API_KEYS_FILE) if given, else config/api_keys.yaml, else the sample."""
    if explicit:
        return Path(explicit)
    return API_KEYS_FILE if API_KEYS_FILE.exists() else API_KEYS_SAMPLE


def load_api_keys(path: str | Path) -> ApiKeys:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ApiKeysError(f"{path}: file not found") from None
    except OSError as exc:
        raise ApiKeysError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ApiKeysError(f"{path}: not valid YAML: {exc}") from None
    return parse_api_keys(data, source=path)


def parse_api_keys(data: Any, *, source: Path) -> ApiKeys:
    if not isinstance(data, Mapping) or set(data) != {"tenants"} or not isinstance(data["tenants"], Mapping):
        raise ApiKeysError(
            f"{source}: expected one top-level key 'tenants' mapping tenant -> {{keys: [...]}}"
        )
    tenants: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for tenant, entry in data["tenants"].items():
        where = f"{source}: tenants.{tenant}"
        # The services' own rule: every tenant the gateway forwards is one they accept.
        if not isinstance(tenant, str) or not chassis.is_valid_tenant(tenant):
            raise ApiKeysError(f"{where}: tenant names must match {chassis.TENANT_PATTERN}")
        if not isinstance(entry, Mapping) or set(entry) - {"keys"} or not isinstance(entry.get("keys"), list):
            raise ApiKeysError(f"{where}: expected {{keys: [<key>, ...]}}")
        keys = []
        for index, key in enumerate(entry["keys"]):
            if not isinstance(key, str) or not _KEY.match(key) or "," in key:
                raise ApiKeysError(
                    f"{where}.keys[{index}]: a key is 16-256 printable characters, no whitespace or commas"
                )
            if key in owner:
                raise ApiKeysError(f"{where}.keys[{index}]: the same key is also a key of {owner[key]!r}")
            owner[key] = tenant
            keys.append(key)
        tenants[tenant] = tuple(keys)
    if not owner:
        raise ApiKeysError(f"{source}: no keys at all: every /v1 request would get 401")
    return ApiKeys(source=source, tenants=tenants)


def apply_api_keys(envoy_config: dict[str, Any], keys: ApiKeys) -> dict[str, Any]:
    """Put ``keys`` into every api_key_auth filter of ``envoy_config`` (changed in place, returned)."""
    found = 0
    for listener in envoy_config["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                for http_filter in network_filter.get("typed_config", {}).get("http_filters", []):
                    if http_filter.get("name") == _API_KEY_AUTH:
                        http_filter["typed_config"]["credentials"] = keys.credentials()
                        found += 1
    if not found:
        raise ApiKeysError(f"the Envoy config has no {_API_KEY_AUTH} filter to put the keys in")
    return envoy_config
