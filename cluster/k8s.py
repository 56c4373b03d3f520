"""Kubernetes manifests for Floodgate, generated from the budget file and the cluster's settings.

The numbers in ``deploy/kubernetes/base`` are not written by hand: each Deployment's replicas is its
service's ``replicas x workers`` in the budget (one process per pod), its resources are the budget's
``cpu_cores`` and ``memory_mib``, its ports, probes and environment are what the local cluster gives the
same process (`cluster.children`, `ClusterSettings`). ``python -m cluster k8s --out deploy/kubernetes``
writes the base and the simulator component; the committed files are that output for
``config/budget.toml`` (``tests/deploy`` keeps them equal and validates them against the Kubernetes
schemas). The example overlay (``deploy/kubernetes/overlays/example``) is written by hand on top.

What runs: the gateway (Envoy, its config rendered by an init container with ``python -m cluster.envoy
render --compose``: the Services carry compose's names), online, the ingest API, the ingest workers,
the rate-limit service (ours, with Redis for counters shared by its replicas), and optionally the
simulator. PostgreSQL is external (the ``floodgate-database`` Secret).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import floodgate
import yaml

from .children import cluster_children
from .settings import ClusterSettings

__all__ = [
    "BUDGET_FILE",
    "IMAGE",
    "base_files",
    "manifest_texts",
    "simulator_files",
    "write_manifests",
]

IMAGE = "floodgate:local"  # the Dockerfile's image; an overlay names its registry and tag (`images:`)
ENVOY_IMAGE = "envoyproxy/envoy:v1.40-latest"
REDIS_IMAGE = "redis:7.4-alpine"
#: The budget and the rate-limit descriptors the image was built with (the Dockerfile copies config/):
#: the same files these manifests' numbers come from.
BUDGET_FILE = "/app/config/budget.toml"
RATELIMIT_CONFIG = "/app/config/ratelimit.yaml"
KEYS_MOUNT = "/etc/floodgate-keys"
#: The non-root user of the Dockerfile (numeric, so that the kubelet can check runAsNonRoot).
FLOODGATE_UID = 10001
#: Online scales on CPU: its provider calls are bounded by gates, so a busy process is CPU-bound.
ONLINE_CPU_TARGET = 70
#: The query KEDA runs on the jobs table: runnable queued jobs (retries waiting for their backoff
#: are not work yet).
QUEUED_JOBS_QUERY = "SELECT count(*) FROM ingest_jobs WHERE state = 'queued' AND run_at <= now()"
#: Seconds between a pod's removal from its Service and SIGTERM, so Envoy stops sending it requests
#: (its DNS refresh and health checks) before the process drains.
PRESTOP_SECONDS = 5
#: Processes not in the budget: what each container may use.
GATEWAY_RESOURCES = {"cpu": "1", "memory": "256Mi"}
RATELIMIT_RESOURCES = {"cpu": "500m", "memory": "256Mi"}
REDIS_RESOURCES = {"cpu": "250m", "memory": "128Mi"}
SIMULATOR_RESOURCES = {"cpu": "500m", "memory": "256Mi"}
GATEWAY_REPLICAS = 2
RATELIMIT_REPLICAS = 2

PART_OF = "floodgate"
#: Pods with this label (in any namespace) may scrape /metrics: a Prometheus, say.
SCRAPER_LABEL = {"floodgate.dev/scraper": "true"}


# -- small builders ----------------------------------------------------------------------------------


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "labels": _labels(name)}


def _resources(cpu_cores: float, memory_mib: int) -> dict[str, str]:
    return {"cpu": f"{round(cpu_cores * 1000)}m", "memory": f"{memory_mib}Mi"}


def _guaranteed(amounts: Mapping[str, str]) -> dict[str, Any]:
    """Requests equal to limits: the budget's figures are what a process may use, no more."""
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _http_probe(path: str, port: int | str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _probes(port: int | str) -> dict[str, Any]:
    """Ready on /readyz (its dependencies answer), alive on /healthz (the process answers)."""
    return {
        "readinessProbe": _http_probe("/readyz", port, period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", port, period=10, failures=3),
    }


def _secure() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": FLOODGATE_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def _deployment(
    name: str,
    *,
    replicas: int,
    containers: list[dict[str, Any]],
    grace: int,
    volumes: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    pod_security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace,
        "containers": containers,
    }
    if pod_security is not None:
        spec["securityContext"] = pod_security
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _selector(name)},
            "template": {"metadata": {"labels": _labels(name)}, "spec": spec},
        },
    }


def _service(name: str, ports: Mapping[str, int], *, headless: bool) -> dict[str, Any]:
    """Headless for the services behind Envoy: DNS gives Envoy every ready pod, so it balances per
    request (least request), health-checks and ejects each pod, instead of one virtual IP."""
    spec: dict[str, Any] = {
        "selector": _selector(name),
        "ports": [{"name": port_name, "port": port, "targetPort": port} for port_name, port in ports.items()],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name), "spec": spec}


def _pdb(name: str) -> dict[str, Any]:
    """One pod of the service at a time during voluntary disruptions (node drains); maxUnavailable,
    not minAvailable, so a one-pod service can still be drained."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name)}},
    }


def _allow(name: str, rules: list[tuple[list[dict[str, Any]], list[int]]]) -> dict[str, Any]:
    """A NetworkPolicy letting in only ``rules``: (peers, ports) each."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name),
        "spec": {
            "podSelector": {"matchLabels": _selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": peers, "ports": [{"protocol": "TCP", "port": port} for port in ports]}
                if peers
                else {"ports": [{"protocol": "TCP", "port": port} for port in ports]}
                for peers, ports in rules
            ],
        },
    }


def _pods(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": _selector(name)}}


def _scrapers() -> dict[str, Any]:
    return {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(SCRAPER_LABEL)}}


def _database_env(prefix: str) -> dict[str, Any]:
    return {
        "name": f"{prefix}DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "floodgate-database", "key": "url"}},
    }


def _env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def _pod_env(child_env: Mapping[str, str], prefix: str) -> list[dict[str, Any]]:
    """A service's own variables as the local cluster sets them, for a pod: listening on every
    address, the budget from the ConfigMap, the database from its Secret; the providers come from
    the `floodgate-providers` ConfigMap and the optional `floodgate-provider-keys` Secret."""
    own = {}
    for name, value in child_env.items():
        if name.startswith("FLOODGATE_") or name.endswith("_DATABASE_URL"):
            continue
        if name.endswith("_HOST"):
            value = "0.0.0.0"
        elif name.endswith("_BUDGET_FILE"):
            value = BUDGET_FILE
        own[name] = value
    return [*_env(own), _database_env(prefix)]


def _providers_from() -> list[dict[str, Any]]:
    return [
        {"configMapRef": {"name": "floodgate-providers"}},
        {"secretRef": {"name": "floodgate-provider-keys", "optional": True}},
    ]


def _pre_stop() -> dict[str, Any]:
    return {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}}


def _migrate_init() -> dict[str, Any]:
    """The migrations before a service starts: idempotent, one runner at a time under an advisory
    lock (cluster/migrate.py), so every pod may run them; no Job to re-create on each release."""
    return {
        "name": "migrate",
        "image": IMAGE,
        "command": ["python", "-m", "cluster.migrate", "$(DATABASE_URL)"],
        "env": [_database_env("")],
        "securityContext": _secure(),
        "resources": _guaranteed({"cpu": "100m", "memory": "128Mi"}),
    }


# -- the services ------------------------------------------------------------------------------------


def _python_service(
    name: str,
    child_env: Mapping[str, str],
    prefix: str,
    command: list[str],
    *,
    port: int,
    budget: floodgate.Budget,
    budget_name: str,
    grace: int,
) -> dict[str, Any]:
    shape = budget.service(budget_name)
    container = {
        "name": name,
        "image": IMAGE,
        "command": command,
        "ports": [{"name": "http", "containerPort": port}],
        "env": _pod_env(child_env, prefix),
        "envFrom": _providers_from(),
        **_probes("http"),
        "lifecycle": _pre_stop(),
        "resources": _guaranteed(_resources(shape.cpu_cores, shape.memory_mib)),
        "securityContext": _secure(),
    }
    return _deployment(
        name,
        replicas=shape.processes,
        containers=[container],
        grace=grace,
        init=[_migrate_init()],
        pod_security=_pod_security(),
    )


def _grace(child_env: Mapping[str, str], prefix: str) -> int:
    """The preStop pause, the service's own grace for requests in flight, and a margin."""
    from chassis import BaseServiceSettings

    default = BaseServiceSettings.model_fields["grace_period"].default
    return PRESTOP_SECONDS + math.ceil(float(child_env.get(f"{prefix}GRACE_PERIOD", default))) + 5


def _worker_job_concurrency() -> int:
    from services.ingest.settings import IngestWorkerSettings

    return IngestWorkerSettings.model_fields["job_concurrency"].default


def _worker_grace() -> int:
    """Longer than a job lease: a worker stopping lets its running jobs finish (shutdown grace),
    then its last heartbeat's lease runs out before the pod is killed, so no job is claimed twice
    while the old attempt still writes."""
    from services.ingest.settings import IngestWorkerSettings

    fields = IngestWorkerSettings.model_fields
    return PRESTOP_SECONDS + math.ceil(fields["shutdown_grace"].default + fields["lease_seconds"].default) + 5


def base_files(budget: floodgate.Budget, settings: ClusterSettings) -> dict[str, list[dict[str, Any]]]:
    """File name -> the resources in it, for ``deploy/kubernetes/base``."""
    children = {c.name: c for c in cluster_children(settings, envoy_config=Path("/etc/envoy/envoy.yaml"))}
    online, api, worker = children["online"], children["ingest-api"], children["ingest-worker-1"]

    files: dict[str, list[dict[str, Any]]] = {}
    files["network-policy.yaml"] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    ]

    online_plan = budget.service("online").processes
    files["online.yaml"] = [
        _python_service(
            "online",
            online.env,
            "ONLINE_",
            ["python", "-m", "services.online"],
            port=settings.online_port,
            budget=budget,
            budget_name="online",
            grace=_grace(online.env, "ONLINE_"),
        ),
        _service("online", {"http": settings.online_port}, headless=True),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta("online"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "online"},
                # The plan; past it (with membership, the default) only as far as the database
                # pools fit, which an overlay checks (tests/deploy).
                "minReplicas": 1,
                "maxReplicas": online_plan,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": ONLINE_CPU_TARGET},
                        },
                    }
                ],
            },
        },
        _pdb("online"),
        _allow(
            "online", [([_pods("gateway")], [settings.online_port]), ([_scrapers()], [settings.online_port])]
        ),
    ]

    files["ingest-api.yaml"] = [
        _python_service(
            "ingest-api",
            api.env,
            "INGEST_API_",
            ["python", "-m", "services.ingest", "api"],
            port=settings.ingest_api_port,
            budget=budget,
            budget_name="ingest_api",
            grace=_grace(api.env, "INGEST_API_"),
        ),
        _service("ingest-api", {"http": settings.ingest_api_port}, headless=True),
        _pdb("ingest-api"),
        _allow(
            "ingest-api",
            [([_pods("gateway")], [settings.ingest_api_port]), ([_scrapers()], [settings.ingest_api_port])],
        ),
    ]

    worker_plan = budget.service("ingest_worker").processes
    files["ingest-worker.yaml"] = [
        _python_service(
            "ingest-worker",
            worker.env,
            "INGEST_WORKER_",
            ["python", "-m", "services.ingest", "worker"],
            port=settings.ingest_worker_port,
            budget=budget,
            budget_name="ingest_worker",
            grace=_worker_grace(),
        ),
        _service("ingest-worker", {"http": settings.ingest_worker_port}, headless=True),
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": _meta("ingest-worker"),
            "spec": {
                "scaleTargetRef": {"name": "ingest-worker"},
                # One worker stays: it also reaps expired leases and deletes old jobs.
                "minReplicaCount": 1,
                "maxReplicaCount": worker_plan,
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "triggers": [
                    {
                        "type": "postgresql",
                        "metadata": {
                            "query": QUEUED_JOBS_QUERY,
                            # A worker is kept busy by as many runnable jobs as it runs at once.
                            "targetQueryValue": str(_worker_job_concurrency()),
                            "activationTargetQueryValue": "0",
                        },
                        "authenticationRef": {"name": "floodgate-database"},
                    }
                ],
            },
        },
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": _meta("floodgate-database"),
            "spec": {
                "secretTargetRef": [{"parameter": "connection", "name": "floodgate-database", "key": "url"}]
            },
        },
        _pdb("ingest-worker"),
        _allow(
            "ingest-worker",
            [
                ([_pods("gateway")], [settings.ingest_worker_port]),
                ([_scrapers()], [settings.ingest_worker_port]),
            ],
        ),
    ]

    files["ratelimit.yaml"] = _ratelimit(settings, children["ratelimit"].env)
    files["redis.yaml"] = _redis()
    files["gateway.yaml"] = _gateway(settings)
    return files


def _ratelimit(settings: ClusterSettings, child_env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Our rate-limit service (services/ratelimit), its counters in Redis so that every replica
    counts the same windows. envoyproxy/ratelimit reads the same descriptors file and would fit too;
    ours keeps one image, the probes and the metrics the dashboard and alerts read."""
    grpc, http = settings.ratelimit_port, settings.ratelimit_http_port
    env = {k: v for k, v in child_env.items() if k not in ("RATELIMIT_CONFIG",)}
    env["RATELIMIT_HOST"] = "0.0.0.0"
    env["RATELIMIT_CONFIG"] = RATELIMIT_CONFIG
    env["RATELIMIT_REDIS_URL"] = "redis://redis:6379/0"
    container = {
        "name": "ratelimit",
        "image": IMAGE,
        "command": ["python", "-m", "services.ratelimit"],
        "ports": [{"name": "grpc", "containerPort": grpc}, {"name": "http", "containerPort": http}],
        "env": _env(env),
        **_probes("http"),
        "resources": _guaranteed(RATELIMIT_RESOURCES),
        "securityContext": _secure(),
    }
    return [
        _deployment(
            "ratelimit",
            replicas=RATELIMIT_REPLICAS,
            containers=[container],
            grace=15,
            pod_security=_pod_security(),
        ),
        _service("ratelimit", {"grpc": grpc, "http": http}, headless=True),
        _pdb("ratelimit"),
        # The gateway: gRPC for its rate-limit filter, HTTP for the routes the service answers itself.
        _allow("ratelimit", [([_pods("gateway")], [grpc, http]), ([_scrapers()], [http])]),
    ]


def _redis() -> list[dict[str, Any]]:
    """The rate-limit counters: one-second windows, nothing worth persisting."""
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "args": ["--save", "", "--appendonly", "no"],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10},
        "resources": _guaranteed(REDIS_RESOURCES),
        "securityContext": _secure(),
    }
    return [
        _deployment("redis", replicas=1, containers=[container], grace=10),
        _service("redis", {"redis": 6379}, headless=False),
        _allow("redis", [([_pods("ratelimit")], [6379])]),
    ]


def _gateway(settings: ClusterSettings) -> list[dict[str, Any]]:
    """Envoy, the one entry point: its config rendered at start by the floodgate image from the same
    gateway/envoy.yaml as `make up`, with the API keys from the `floodgate-api-keys` Secret."""
    port, admin = settings.gateway_port, settings.envoy_admin_port
    render = {
        "name": "envoy-config",
        "image": IMAGE,
        "command": ["python", "-m", "cluster.envoy", "render", "--compose", "-o", "/etc/envoy/envoy.yaml"],
        "env": _env(
            {
                "FLOODGATE_BUDGET": BUDGET_FILE,
                "FLOODGATE_API_KEYS_FILE": f"{KEYS_MOUNT}/api_keys.yaml",
                "FLOODGATE_GATEWAY_PORT": str(port),
                "FLOODGATE_ENVOY_ADMIN_PORT": str(admin),
            }
        ),
        "resources": _guaranteed({"cpu": "200m", "memory": "256Mi"}),
        "securityContext": {**_secure(), "runAsUser": FLOODGATE_UID, "runAsNonRoot": True},
        "volumeMounts": [
            {"name": "envoy-config", "mountPath": "/etc/envoy"},
            {"name": "api-keys", "mountPath": KEYS_MOUNT, "readOnly": True},
        ],
    }
    envoy = {
        "name": "envoy",
        "image": ENVOY_IMAGE,
        "command": ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn", "--disable-hot-restart"],
        "ports": [{"name": "http", "containerPort": port}, {"name": "admin", "containerPort": admin}],
        "readinessProbe": _http_probe("/ready", "admin", period=5, failures=2),
        "livenessProbe": _http_probe("/ready", "admin", period=10, failures=3),
        "lifecycle": _pre_stop(),
        "resources": _guaranteed(GATEWAY_RESOURCES),
        "securityContext": _secure(),
        "volumeMounts": [{"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": True}],
    }
    volumes = [
        {"name": "envoy-config", "emptyDir": {}},
        {"name": "api-keys", "secret": {"secretName": "floodgate-api-keys"}},
    ]
    return [
        _deployment(
            "gateway",
            replicas=GATEWAY_REPLICAS,
            containers=[envoy],
            init=[render],
            grace=PRESTOP_SECONDS + 20,
            volumes=volumes,
        ),
        _service("gateway", {"http": port}, headless=False),
        _pdb("gateway"),
        # The edge: anyone may reach the listener; the admin port (runtime flags) no one.
        _allow("gateway", [([], [port])]),
    ]


def simulator_files(settings: ClusterSettings) -> dict[str, list[dict[str, Any]]]:
    """The optional simulator component: the providers' stand-in, reached by the services that call
    providers and by the gateway's /healthz/simulator route."""
    children = {c.name: c for c in cluster_children(settings, envoy_config=Path("/etc/envoy/envoy.yaml"))}
    port = settings.simulator_port
    env = dict(children["simulator"].env)
    env["SIMULATOR_HOST"] = "0.0.0.0"
    container = {
        "name": "simulator",
        "image": IMAGE,
        "command": ["python", "-m", "services.simulator"],
        "ports": [{"name": "http", "containerPort": port}],
        "env": _env(env),
        **_probes("http"),
        "resources": _guaranteed(SIMULATOR_RESOURCES),
        "securityContext": _secure(),
    }
    callers = [_pods(name) for name in ("gateway", "online", "ingest-worker")]
    return {
        "simulator.yaml": [
            _deployment(
                "simulator", replicas=1, containers=[container], grace=15, pod_security=_pod_security()
            ),
            _service("simulator", {"http": port}, headless=True),
            _allow("simulator", [(callers, [port]), ([_scrapers()], [port])]),
        ]
    }


# -- files -------------------------------------------------------------------------------------------

_HEADER = "# Generated by `python -m cluster k8s --out deploy/kubernetes` from {budget}: do not edit.\n"


def _dump(documents: list[dict[str, Any]], budget: Path) -> str:
    return _HEADER.format(budget=budget.as_posix()) + yaml.safe_dump_all(
        documents, sort_keys=False, explicit_start=True
    )


def manifest_texts(settings: ClusterSettings) -> dict[Path, str]:
    """Relative path under ``deploy/kubernetes`` -> its generated text."""
    budget = floodgate.load_budget(settings.budget)
    source = settings.budget
    texts: dict[Path, str] = {}
    base = base_files(budget, settings)
    for name, documents in base.items():
        texts[Path("base") / name] = _dump(documents, source)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/part-of": PART_OF}}],
        "resources": sorted(base),
        "configMapGenerator": [{"name": "floodgate-providers", "literals": _provider_literals(settings)}],
    }
    texts[Path("base/kustomization.yaml")] = _dump([kustomization], source).replace("---\n", "", 1)
    for name, documents in simulator_files(settings).items():
        texts[Path("components/simulator") / name] = _dump(documents, source)
    component = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": ["simulator.yaml"],
    }
    texts[Path("components/simulator/kustomization.yaml")] = _dump([component], source).replace(
        "---\n", "", 1
    )
    return texts


def _provider_literals(settings: ClusterSettings) -> list[str]:
    """Each provider's base URL and model, the simulator's Service by default (keys: a Secret)."""
    literals = []
    for dependency, provider in settings.providers.items():
        base_url = (
            f"http://simulator:{settings.simulator_port}"
            if _is_simulator(provider.base_url, settings)
            else provider.base_url
        )
        literals.append(f"FLOODGATE_{dependency.upper()}_BASE_URL={base_url}")
        literals.append(f"FLOODGATE_{dependency.upper()}_MODEL={provider.model}")
    return literals


def _is_simulator(base_url: str, settings: ClusterSettings) -> bool:
    return base_url.rstrip("/") == f"http://{settings.host}:{settings.simulator_port}"


def write_manifests(settings: ClusterSettings, directory: Path) -> list[Path]:
    written = []
    for relative, text in manifest_texts(settings).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
