"""The API as a client sees it through the gateway: one OpenAPI 3.1 document, served at ``/openapi.json``.

It is built, when the Envoy config is rendered, from the two things that decide what a client gets:
the rendered config itself (its routes, the API-key sources, body limits, deadlines and rate limits,
the replies Envoy makes on its own) and the services' documents (generated from their models). An
operation is listed only when a route of that config takes a request for it to the service that
serves it, so the document cannot promise a path the gateway does not route. Headers only the
gateway sets (the tenant, ``x-envoy-*``) are not the client's business and are left out.

`build_gateway_openapi` is pure; ``cluster.envoy`` gives it the services' documents for the cluster's
settings and writes the result into the ``openapi`` route's direct response (`apply_gateway_openapi`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import chassis

from services.ratelimit import BUDGET_KEY, budget_window

__all__ = [
    "GATEWAY_ERRORS",
    "OPENAPI_ROUTE",
    "EdgeRoute",
    "GatewayOpenApiError",
    "apply_gateway_openapi",
    "build_gateway_openapi",
    "edge_routes",
    "route_for",
]

#: The name of the route whose direct response is the document.
OPENAPI_ROUTE = "openapi"

_API_KEY_AUTH = "envoy.filters.http.api_key_auth"
_BUFFER = "envoy.filters.http.buffer"
_LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
_RATELIMIT = "envoy.filters.http.ratelimit"
_HEADER_MUTATION = "envoy.filters.http.header_mutation"
#: Envoy drops these from requests that come from outside and sets some of them itself.
_ENVOY_HEADER_PREFIX = "x-envoy-"
_METHODS = ("get", "put", "post", "delete", "patch")
_PATH_PARAM = re.compile(r"\{[^}/]+\}")

_E = chassis.ErrorSpec
#: The replies Envoy makes itself (``local_reply_config`` of gateway/envoy.yaml), by status.
GATEWAY_ERRORS: dict[int, chassis.ErrorSpec] = {
    spec.status: spec
    for spec in (
        _E(
            401,
            "Unauthenticated",
            ("unauthenticated",),
            "no API key, or an unknown one (send it in x-api-key or Authorization: Bearer)",
        ),
        _E(413, "PayloadTooLarge", ("payload_too_large",), "the body is larger than the route accepts"),
        _E(
            429,
            "RateLimited",
            ("rate_limited",),
            "over the tenant's rate limit for this route, its token or cost budget (LLM routes: "
            "`x-ratelimit-remaining-tokens` / `-cost` say 0), or the gateway's own per-route flood guard",
            retry_after=True,
        ),
        _E(
            503,
            "Unavailable",
            ("overloaded", "unavailable"),
            "the service is at the gateway's concurrency limit for it, or no healthy instance answered",
            retry_after=True,
        ),
        _E(
            504,
            "DeadlineExceeded",
            ("deadline_exceeded",),
            "the service did not answer within the route's deadline",
        ),
    )
}


class GatewayOpenApiError(Exception):
    """The config and the services' documents do not make one document (a route nobody documents,
    two services defining one schema name differently, no ``openapi`` route)."""


@dataclass(frozen=True)
class EdgeRoute:
    """What the document needs to know of one Envoy route."""

    name: str | None
    match: Mapping[str, Any]
    cluster: str | None
    prefix_rewrite: str | None
    direct_status: int | None
    authenticated: bool
    body_limit: int
    timeout: str | None
    rate_limited: bool
    #: the windows of the tenant's token and cost budgets the route asks before a request
    budgets: tuple[str, ...] = ()

    def matches(self, method: str, path: str) -> bool:
        """Whether Envoy would pick this route for ``method path`` (the matchers the config uses)."""
        m = self.match
        if "path" in m and path != m["path"]:
            return False
        if "prefix" in m and not path.startswith(m["prefix"]):
            return False
        if "safe_regex" in m and not re.fullmatch(m["safe_regex"]["regex"], path):
            return False
        for header in m.get("headers", ()):
            if header["name"] != ":method":
                raise GatewayOpenApiError(
                    f"route {self.name or m}: cannot document a match on {header['name']}"
                )
            string_match = header["string_match"]
            if "exact" in string_match and method.upper() != string_match["exact"]:
                return False
            if "safe_regex" in string_match and not re.fullmatch(
                string_match["safe_regex"]["regex"], method.upper()
            ):
                return False
        return True


def _hcm(envoy_config: Mapping[str, Any]) -> dict[str, Any]:
    for listener in envoy_config["static_resources"]["listeners"]:
        if listener.get("name") == "edge":
            return listener["filter_chains"][0]["filters"][0]["typed_config"]
    raise GatewayOpenApiError("the Envoy config has no listener named 'edge'")


def _http_filter(hcm: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    return next((f for f in hcm["http_filters"] if f["name"] == name), None)


def edge_routes(envoy_config: Mapping[str, Any]) -> list[EdgeRoute]:
    """The routes of the edge listener, in Envoy's order (the first match wins)."""
    hcm = _hcm(envoy_config)
    buffer = _http_filter(hcm, _BUFFER)
    default_limit = buffer["typed_config"]["max_request_bytes"] if buffer else 0
    routes = []
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for raw in vhost["routes"]:
            per_filter = raw.get("typed_per_filter_config", {})
            action = raw.get("route", {})
            direct = raw.get("direct_response")
            routes.append(
                EdgeRoute(
                    name=raw.get("name"),
                    match=raw["match"],
                    cluster=action.get("cluster"),
                    prefix_rewrite=action.get("prefix_rewrite"),
                    direct_status=direct["status"] if direct else None,
                    authenticated=not per_filter.get(_API_KEY_AUTH, {}).get("disabled", False),
                    body_limit=per_filter.get(_BUFFER, {})
                    .get("buffer", {})
                    .get("max_request_bytes", default_limit),
                    timeout=action.get("timeout"),
                    rate_limited=bool(action.get("rate_limits"))
                    or bool(per_filter.get(_RATELIMIT, {}).get("rate_limits"))
                    or _LOCAL_RATELIMIT in per_filter,
                    budgets=_budget_windows(per_filter.get(_RATELIMIT, {}).get("rate_limits", ())),
                )
            )
    return routes


def _budget_windows(rate_limits: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The budget windows the limits ask before a request (descriptor ``budget`` with zero hits)."""
    windows = []
    for limit in rate_limits:
        if limit.get("apply_on_stream_done") or limit.get("hits_addend") != {"number": 0}:
            continue
        for action in limit["actions"]:
            key = action.get("generic_key", {})
            if key.get("descriptor_key") == BUDGET_KEY:
                windows.append(key["descriptor_value"])
    return tuple(windows)


def _measure(window: str) -> str:
    """What a budget window counts (``tokens`` or ``cost``: services/ratelimit/_budgets.py)."""
    known = budget_window(window)
    if known is None:
        raise GatewayOpenApiError(
            f"the gateway asks budget {window!r}, which the rate-limit service does not know"
        )
    return known.measure


def _budget_headers(measures: Iterable[str]) -> dict[str, Any]:
    """The headers a route with token or cost budgets adds to its answers (services/ratelimit/_budgets.py)."""
    headers: dict[str, Any] = {}
    for measure in measures:
        unit = "tokens" if measure == "tokens" else "US dollars (estimated)"
        headers |= {
            f"x-ratelimit-limit-{measure}": {
                "description": f"the tenant's {measure} budget of the window with the least left, in {unit}",
                "schema": {"type": "string"},
            },
            f"x-ratelimit-remaining-{measure}": {
                "description": f"what is left of it before this request's {measure} were counted",
                "schema": {"type": "string"},
            },
            f"x-ratelimit-reset-{measure}": {
                "description": "until that window ends, as `59s`, `6m0s`, `13h2m5s`",
                "schema": {"type": "string"},
            },
        }
    return headers


def route_for(routes: Iterable[EdgeRoute], method: str, path: str) -> EdgeRoute | None:
    """The route Envoy picks for ``method path`` (None: no route matches)."""
    return next((r for r in routes if r.matches(method, path)), None)


def _security(hcm: Mapping[str, Any]) -> dict[str, Any]:
    """The security schemes of the api_key_auth filter's key sources."""
    auth = _http_filter(hcm, _API_KEY_AUTH)
    if auth is None:
        return {}
    schemes: dict[str, Any] = {}
    for source in auth["typed_config"].get("key_sources", ()):
        if source.get("header", "").lower() == "authorization":
            schemes["BearerKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "the API key as a bearer token: `Authorization: Bearer <key>`",
            }
        elif "header" in source:
            schemes["ApiKeyHeader"] = {"type": "apiKey", "in": "header", "name": source["header"]}
        elif "query" in source:
            schemes["ApiKeyQuery"] = {"type": "apiKey", "in": "query", "name": source["query"]}
        elif "cookie" in source:
            schemes["ApiKeyCookie"] = {"type": "apiKey", "in": "cookie", "name": source["cookie"]}
    return schemes


def _internal_headers(hcm: Mapping[str, Any]) -> set[str]:
    """Request headers the gateway owns: the ones it removes from every request and the one it
    forwards the caller's identity in."""
    names = {chassis.TENANT_HEADER}
    mutation = _http_filter(hcm, _HEADER_MUTATION)
    if mutation is not None:
        for change in mutation["typed_config"].get("mutations", {}).get("request_mutations", ()):
            if "remove" in change:
                names.add(change["remove"].lower())
    auth = _http_filter(hcm, _API_KEY_AUTH)
    if auth is not None and "forwarding" in auth["typed_config"]:
        names.add(auth["typed_config"]["forwarding"]["header"].lower())
    return names


def _resolve(doc: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` itself, or what its local ``$ref`` points at in ``doc``."""
    ref = item.get("$ref")
    if ref is None:
        return copy.deepcopy(dict(item))
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(doc, node)


def _merge_components(target: dict[str, Any], kind: str, items: Mapping[str, Any], source: str) -> None:
    into = target.setdefault(kind, {})
    for name, value in items.items():
        if name in into and into[name] != value:
            raise GatewayOpenApiError(
                f"components.{kind}.{name} differs between {into[name]!r:.60} and {source}"
            )
        into[name] = value


def _merged_response(service: dict[str, Any] | None, gateway: chassis.ErrorSpec) -> dict[str, Any]:
    """One status answered by the service and by the gateway itself: both codes in one response."""
    ours = gateway.response()
    if service is None:
        return ours
    service["description"] += f" At the gateway: {ours['description']}"
    service.setdefault("headers", {}).update(ours["headers"])
    return service


def _gateway_parts(route: EdgeRoute) -> str:
    parts = [f"route `{route.name}`" if route.name else "routed by the gateway"]
    if route.timeout:
        parts.append(f"deadline {route.timeout}")
    parts.append(f"body at most {route.body_limit} bytes")
    if route.rate_limited:
        parts.append("rate-limited per tenant")
    if route.budgets:
        parts.append(f"the tenant's budgets ({', '.join(route.budgets)}) asked before and counted after")
    return "\n\nThrough the gateway: " + ", ".join(parts) + "."


def _operation(
    doc: Mapping[str, Any], operation: Mapping[str, Any], route: EdgeRoute, internal: set[str]
) -> dict[str, Any]:
    """``operation`` of the service as the client sees it through ``route``."""
    op = copy.deepcopy(dict(operation))
    params = [_resolve(doc, p) for p in op.get("parameters", ())]
    op["parameters"] = [
        p
        for p in params
        if not (
            p["in"] == "header"
            and (p["name"].lower() in internal or p["name"].lower().startswith(_ENVOY_HEADER_PREFIX))
        )
    ]
    if not op["parameters"]:
        del op["parameters"]
    responses = {status: _resolve(doc, r) for status, r in op.get("responses", {}).items()}
    gateway_statuses = [413]
    if route.authenticated:
        gateway_statuses.append(401)
        responses.pop("401", None)  # the tenant header is always set past the key check
    if route.rate_limited:
        gateway_statuses.append(429)
    if route.cluster is not None:
        gateway_statuses += [503, 504]
    for status in gateway_statuses:
        key = str(status)
        responses[key] = _merged_response(responses.get(key), GATEWAY_ERRORS[status])
    if route.budgets:
        measures = sorted({_measure(window) for window in route.budgets})
        for status, response in responses.items():
            if status.startswith("2") or status == "429":
                response.setdefault("headers", {}).update(_budget_headers(measures))
    if route.authenticated:
        responses["401"]["headers"]["www-authenticate"] = {
            "description": "the scheme to authenticate with",
            "schema": {"type": "string"},
        }
    op["responses"] = dict(sorted(responses.items()))
    op["description"] = op.get("description", op.get("summary", "")) + _gateway_parts(route)
    if not route.authenticated:
        op["security"] = []
    return op


def _sample(path: str) -> str:
    """A concrete path for a templated one (``/jobs/{job_id}`` -> ``/jobs/1``), to route it."""
    return _PATH_PARAM.sub("1", path)


def _operation_id(path: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", path.strip("/"))
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def build_gateway_openapi(
    envoy_config: Mapping[str, Any], documents: Mapping[str, Mapping[str, Any]], *, version: str = "1.0.0"
) -> dict[str, Any]:
    """The gateway's document for ``envoy_config``; ``documents`` maps an Envoy cluster name to the
    OpenAPI document of the service behind it (several clusters may lead to one service)."""
    hcm = _hcm(envoy_config)
    routes = edge_routes(envoy_config)
    internal = _internal_headers(hcm)
    security = _security(hcm)
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    probes = chassis.probe_paths(ready_when="")
    health = probes["/healthz"]["get"]

    used: set[int] = set()
    unique = {id(doc): doc for doc in documents.values()}
    for doc in unique.values():
        title = doc["info"]["title"]
        for kind in ("schemas", "headers"):
            _merge_components(components, kind, doc.get("components", {}).get(kind, {}), title)
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                route = route_for(routes, method, _sample(path))
                if route is None or route.cluster is None or route.prefix_rewrite is not None:
                    continue  # not routed to it (its probes, its metrics): not part of the API
                if documents.get(route.cluster) is not doc:
                    continue
                paths.setdefault(path, {})[method] = _operation(doc, operation, route, internal)
                used.add(id(route))

    for route in routes:
        if route.cluster in documents and route.prefix_rewrite is None and id(route) not in used:
            raise GatewayOpenApiError(
                f"route {route.name or route.match}: no operation of its service uses it"
            )
        path = route.match.get("path")
        if path is None or route.direct_status not in (None, 200):
            continue  # a prefix route (documented through the services' paths), or a refusal
        if route.direct_status is None and route.prefix_rewrite is None:
            continue  # documented through the services' paths (above)
        if route.name == OPENAPI_ROUTE:
            operation = {
                "operationId": "openapi",
                "summary": "this document: the API through the gateway (OpenAPI 3.1)",
                "responses": {
                    "200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {}}}
                },
            }
        elif path.startswith("/healthz/"):
            target = documents.get(route.cluster or "")
            rewritten = route.prefix_rewrite or "/healthz"
            source = (target or {}).get("paths", {}).get(rewritten, {}).get("get", health)
            operation = _resolve(target or {}, source)
            service = path.removeprefix("/healthz/")
            operation["operationId"] = _operation_id(path)
            operation["summary"] = (
                "the gateway is up" if route.cluster is None else f"{service}: the process is alive"
            )
        else:
            raise GatewayOpenApiError(f"route {route.name or path}: no document describes {path}")
        paths[path] = {"get": _operation(documents.get(route.cluster or "", {}), operation, route, internal)}

    _merge_components(components, "schemas", _error_schemas(), "the chassis")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Floodgate API (through the gateway)",
            "version": version,
            "description": (
                "The online endpoints (dealBrain, shadowHunter, nexusAssess) and the omniRAG ingest jobs, "
                "as routed by the gateway. Every request under /v1 needs an API key, in `x-api-key` or "
                "`Authorization: Bearer <key>`; the key decides the tenant. Every error is JSON "
                '`{"error": {"code", "message", "details"}}`, from the services and from the gateway '
                "alike; overload is a fast 429/503 with `Retry-After`. A method a path does not serve "
                "is a 405 with `Allow`; an unknown path is a 404."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {**components, "securitySchemes": security},
        "security": [{name: []} for name in security],
    }


def _error_schemas() -> dict[str, Any]:
    schema = chassis.ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "ErrorResponse": schema}


def apply_gateway_openapi(envoy_config: dict[str, Any], document: Mapping[str, Any]) -> dict[str, Any]:
    """Make ``document`` the body of the ``openapi`` route (``envoy_config`` changed in place, returned)."""
    hcm = _hcm(envoy_config)
    body = json.dumps(document, separators=(",", ":"))
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for raw in vhost["routes"]:
            if raw.get("name") == OPENAPI_ROUTE:
                raw["direct_response"]["body"] = {"inline_string": body}
                limit = hcm["route_config"].get("max_direct_response_body_size_bytes", 4096)
                if len(body.encode()) > limit:
                    raise GatewayOpenApiError(
                        f"the document is {len(body.encode())} bytes; the route config's "
                        f"max_direct_response_body_size_bytes is {limit}"
                    )
                return envoy_config
    raise GatewayOpenApiError(f"the Envoy config has no route named {OPENAPI_ROUTE!r}")
