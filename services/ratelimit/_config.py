"""The descriptor configuration, in the format of the reference service ``envoyproxy/ratelimit``.

A file holds one domain (or several YAML documents, one domain each)::

    domain: floodgate
    descriptors:
      - key: tenant                 # no value: every tenant value gets its own counter
        descriptors:
          - key: route
            value: deal_brain       # only this value matches
            rate_limit: {unit: second, requests_per_unit: 20}
          - key: route              # any other route
            rate_limit: {unit: second, requests_per_unit: 50}
            shadow_mode: true       # count and report, never reject

Keeping the reference format means a deployment that outgrows this service switches to the Go
reference implementation without touching its limits. Supported keys: ``domain``, ``descriptors``,
``key``, ``value`` (exact, or a prefix ending in ``*``), ``rate_limit`` (``unit``,
``requests_per_unit``, ``unlimited``, ``name``), ``shadow_mode``, ``detailed_metric`` (accepted,
ignored). Unknown keys are errors, so a typo never silently removes a limit.

Matching follows the reference service: a request descriptor is a list of ``(key, value)`` entries;
walk the tree one entry per level, preferring an exact ``key_value`` node over a wildcard over a
key-only node; the limit applies when the walk reaches the descriptor's *last* entry on a node that
has a ``rate_limit``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DescriptorNode",
    "DomainConfig",
    "MatchedLimit",
    "RateLimit",
    "RateLimitConfig",
    "Unit",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """The descriptor configuration is invalid; the message names the path of the bad key."""


class Unit(enum.Enum):
    """A rate-limit window. The value is the window length in seconds (fixed windows, as the reference)."""

    SECOND = 1
    MINUTE = 60
    HOUR = 3600
    DAY = 86400

    @property
    def seconds(self) -> int:
        return self.value


@dataclass(frozen=True)
class RateLimit:
    """``requests_per_unit`` requests per fixed window of one ``unit``; ``unlimited`` never rejects."""

    requests_per_unit: int
    unit: Unit
    name: str | None = None
    unlimited: bool = False


@dataclass(frozen=True)
class DescriptorNode:
    """One node of the descriptor tree. ``children`` maps ``key_value`` (exact) or ``key`` (any value)."""

    key: str
    value: str | None
    rate_limit: RateLimit | None
    shadow_mode: bool
    children: Mapping[str, DescriptorNode] = field(default_factory=dict)
    #: children whose value ends in ``*``: (key, value prefix, node), checked in file order
    wildcards: tuple[tuple[str, str, DescriptorNode], ...] = ()


@dataclass(frozen=True)
class MatchedLimit:
    """The limit a request descriptor falls under and the node path that found it."""

    rate_limit: RateLimit
    shadow_mode: bool
    #: ``key_value`` of the matched path, for metrics (values of key-only nodes are not included,
    #: so a per-tenant limit does not create one metric label per tenant)
    metric_key: str


@dataclass(frozen=True)
class DomainConfig:
    domain: str
    root: DescriptorNode

    def find_limit(self, entries: Sequence[tuple[str, str]]) -> MatchedLimit | None:
        """The limit for a request descriptor ``[(key, value), ...]``, or None when nothing limits it."""
        node = self.root
        path: list[str] = []
        for index, (key, value) in enumerate(entries):
            child = _match_child(node, key, value)
            if child is None:
                return None
            path.append(f"{key}_{child.value}" if child.value is not None else key)
            if index == len(entries) - 1:
                if child.rate_limit is None:
                    return None
                return MatchedLimit(child.rate_limit, child.shadow_mode, f"{self.domain}.{'.'.join(path)}")
            if not child.children and not child.wildcards:
                return None
            node = child
        return None

    def node(self, entries: Sequence[tuple[str, str]]) -> DescriptorNode | None:
        """The node the walk for ``entries`` ends on (None when it leaves the tree), to list what
        is configured below it (``GET /v1/usage`` lists the routes counted under a tenant)."""
        node = self.root
        for key, value in entries:
            child = _match_child(node, key, value)
            if child is None:
                return None
            node = child
        return node


def _match_child(node: DescriptorNode, key: str, value: str) -> DescriptorNode | None:
    exact = node.children.get(f"{key}_{value}")
    if exact is not None:
        return exact
    for wild_key, prefix, child in node.wildcards:
        if wild_key == key and value.startswith(prefix):
            return child
    return node.children.get(key)


@dataclass(frozen=True)
class RateLimitConfig:
    """Every domain the service knows. Requests for an unknown domain are not limited."""

    domains: Mapping[str, DomainConfig]

    def domain(self, name: str) -> DomainConfig | None:
        return self.domains.get(name)

    def __repr__(self) -> str:
        return f"RateLimitConfig(domains={sorted(self.domains)})"


# -- parsing -----------------------------------------------------------------------------------

_NODE_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}
_LIMIT_KEYS = {"unit", "requests_per_unit", "unlimited", "name"}


def load_config(path: str | Path) -> RateLimitConfig:
    """Read and validate the YAML file at ``path``. Raises `ConfigError`."""
    path = Path(path)
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(documents, source=str(path))


def parse_config(
    documents: Sequence[Mapping[str, Any]] | Mapping[str, Any], *, source: str = "config"
) -> RateLimitConfig:
    """Validate already-parsed YAML: one domain mapping or a list of them."""
    if isinstance(documents, Mapping):
        documents = [documents]
    domains: dict[str, DomainConfig] = {}
    for doc in documents:
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{source}: a document must be a mapping with 'domain' and 'descriptors'")
        unknown = set(doc) - {"domain", "descriptors"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}")
        domain = doc.get("domain")
        if not isinstance(domain, str) or not domain:
            raise ConfigError(f"{source}: 'domain' must be a non-empty string")
        if domain in domains:
            raise ConfigError(f"{source}: domain {domain!r} defined twice")
        children, wildcards = _parse_children(doc.get("descriptors") or [], f"{domain}.descriptors")
        root = DescriptorNode(
            key="", value=None, rate_limit=None, shadow_mode=False, children=children, wildcards=wildcards
        )
        domains[domain] = DomainConfig(domain=domain, root=root)
    if not domains:
        raise ConfigError(f"{source}: no domain defined")
    return RateLimitConfig(domains=domains)


def _parse_children(
    items: Any, where: str
) -> tuple[dict[str, DescriptorNode], tuple[tuple[str, str, DescriptorNode], ...]]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: must be a list")
    children: dict[str, DescriptorNode] = {}
    wildcards: list[tuple[str, str, DescriptorNode]] = []
    for index, item in enumerate(items):
        node = _parse_node(item, f"{where}[{index}]")
        if node.value is not None and node.value.endswith("*"):
            wildcards.append((node.key, node.value[:-1], node))
            continue
        map_key = f"{node.key}_{node.value}" if node.value is not None else node.key
        if map_key in children:
            raise ConfigError(f"{where}[{index}]: duplicate descriptor {map_key!r}")
        children[map_key] = node
    return children, tuple(wildcards)


def _parse_node(item: Any, where: str) -> DescriptorNode:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(item) - _NODE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    key = item.get("key")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}.key: must be a non-empty string")
    value = item.get("value")
    if value is not None:
        value = str(value)
    shadow = item.get("shadow_mode", False)
    if not isinstance(shadow, bool):
        raise ConfigError(f"{where}.shadow_mode: must be true or false")
    rate_limit = _parse_limit(item["rate_limit"], f"{where}.rate_limit") if "rate_limit" in item else None
    children, wildcards = _parse_children(item.get("descriptors") or [], f"{where}.descriptors")
    return DescriptorNode(
        key=key,
        value=value,
        rate_limit=rate_limit,
        shadow_mode=shadow,
        children=children,
        wildcards=wildcards,
    )


def _parse_limit(raw: Any, where: str) -> RateLimit:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = set(raw) - _LIMIT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    unlimited = raw.get("unlimited", False)
    if not isinstance(unlimited, bool):
        raise ConfigError(f"{where}.unlimited: must be true or false")
    name = raw.get("name")
    if unlimited:
        return RateLimit(requests_per_unit=0, unit=Unit.SECOND, name=name, unlimited=True)
    unit_name = str(raw.get("unit", "")).upper()
    try:
        unit = Unit[unit_name]
    except KeyError:
        choices = ", ".join(u.name.lower() for u in Unit)
        raise ConfigError(f"{where}.unit: {raw.get('unit')!r} is not one of {choices}") from None
    per_unit = raw.get("requests_per_unit")
    if not isinstance(per_unit, int) or isinstance(per_unit, bool) or per_unit < 0:
        raise ConfigError(f"{where}.requests_per_unit: must be an integer >= 0 (got {per_unit!r})")
    return RateLimit(requests_per_unit=per_unit, unit=unit, name=name)
