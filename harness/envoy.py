"""Envoy for the tests and the benchmarks: the committed config rendered onto free ports, the real binary.

`render_gateway` changes only what differs between the committed file and a run (ports, endpoints,
API keys), structurally in the parsed YAML, so every test and benchmark exercises the committed
routes, filters and thresholds; `start_gateway` runs it until the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from cluster.envoy import ONLINE_CLUSTERS, envoy_binary

from . import REPO_ROOT
from .ports import free_port
from .processes import Proc, run_process

__all__ = [
    "ENVOY_YAML",
    "KEYS",
    "Gateway",
    "envoy_binary",
    "find_filter",
    "hcm_of",
    "load_committed",
    "render_gateway",
    "route",
    "start_gateway",
    "validate",
    "without_global_limit",
]

ENVOY_YAML = REPO_ROOT / "gateway" / "envoy.yaml"

#: test tenants and their keys (the rendered config gets exactly these)
KEYS = {
    "key-acme-1": "acme",
    "key-acme-2": "acme",  # a tenant may hold several keys (rotation)
    "key-globex-1": "globex",
    "key-initech-1": "initech",
    "key-initech-2": "initech",
}


def load_committed(source: Path = ENVOY_YAML) -> dict[str, Any]:
    return yaml.safe_load(source.read_text())


def find_filter(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    listener = _named(config["static_resources"]["listeners"], "edge")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for http_filter in hcm["http_filters"]:
        if http_filter["name"] == name:
            return http_filter
    raise LookupError(name)


def hcm_of(config: Mapping[str, Any]) -> dict[str, Any]:
    return _named(config["static_resources"]["listeners"], "edge")["filter_chains"][0]["filters"][0][
        "typed_config"
    ]


def route(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    for vhost in hcm_of(config)["route_config"]["virtual_hosts"]:
        for candidate in vhost["routes"]:
            if candidate.get("name") == name:
                return candidate
    raise LookupError(name)


def without_global_limit(config: dict[str, Any]) -> None:
    """A `start_gateway` ``mutate``: the same gateway minus the global rate-limit filter (the
    ``ShouldRateLimit`` round trip to services/ratelimit); API keys and the local buckets stay."""
    hcm = hcm_of(config)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ratelimit"]


def _named(items: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise LookupError(name)


def render_gateway(
    *,
    gateway_port: int,
    admin_port: int,
    endpoints: Mapping[str, Sequence[int]],
    keys: Mapping[str, str] = KEYS,
    source: Path = ENVOY_YAML,
) -> dict[str, Any]:
    config = copy.deepcopy(load_committed(source))
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    _named(config["static_resources"]["listeners"], "edge")["address"]["socket_address"]["port_value"] = (
        gateway_port
    )
    for cluster in config["static_resources"]["clusters"]:
        name = cluster["name"]
        # "online" stands for every cluster of the online service (one per endpoint, and health)
        service = "online" if name in ONLINE_CLUSTERS else name
        ports = endpoints.get(name) or endpoints.get(service) or [free_port()]  # nothing listens there
        cluster["load_assignment"]["endpoints"] = [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                    for p in ports
                ]
            }
        ]
    find_filter(config, "envoy.filters.http.api_key_auth")["typed_config"]["credentials"] = [
        {"key": key, "client": tenant} for key, tenant in keys.items()
    ]
    return config


class Gateway:
    """A running Envoy: ``url`` of the listener, ``admin`` URL, and stats helpers."""

    def __init__(self, proc: Proc, port: int, admin_port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin_port}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        text = httpx.get(f"{self.admin}/stats", params={"filter": prefix} if prefix else None, timeout=5).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            with contextlib.suppress(ValueError):
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        return self.stats(f"^{name.replace('.', '[.]')}$").get(name, 0)


@contextlib.contextmanager
def start_gateway(
    log_dir: Path,
    *,
    endpoints: Mapping[str, Sequence[int]],
    keys: Mapping[str, str] = KEYS,
    source: Path = ENVOY_YAML,
    name: str = "envoy",
    mutate: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Gateway]:
    """Run Envoy on the committed config; ``mutate`` may change one number for a test (say which)."""
    port, admin_port = free_port(), free_port()
    config = render_gateway(
        gateway_port=port, admin_port=admin_port, endpoints=endpoints, keys=keys, source=source
    )
    if mutate is not None:
        mutate(config)
    path = log_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        str(envoy_binary()),
        "-c",
        str(path),
        "--use-dynamic-base-id",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
        "--disable-hot-restart",
    ]
    with run_process(name, argv, log_dir=log_dir, ports={"http": port, "admin": admin_port}) as proc:
        proc.wait_http("/ready", port=admin_port, within=10)
        yield Gateway(proc, port, admin_port)


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
