"""deploy/kubernetes: the generated base is what ``python -m cluster k8s`` renders from the budget file;
every resource validates offline against the Kubernetes schemas (kubernetes-validate's bundled ones;
KEDA's custom resources against the fields of KEDA's documentation); the replicas, resources, ports,
probes and environment agree with the budget and with what the local cluster runs; the network
policies let only the gateway reach the services; the example overlay builds (``kubectl kustomize``,
when kubectl is installed) and scales past the budget's plan only where membership is on."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import floodgate
import jsonschema
import kubernetes_validate
import pytest
import yaml

from cluster.children import cluster_children
from cluster.envoy import COMPOSE_HOSTS
from cluster.k8s import BUDGET_FILE, manifest_texts
from cluster.preflight import check_budget
from cluster.settings import load_cluster_settings
from harness import REPO_ROOT
from services.ingest.settings import IngestWorkerSettings

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
OVERLAY = DEPLOY / "overlays" / "example"
#: The oldest Kubernetes the manifests are for (the preStop sleep action), and the newest schema.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
#: Deployment -> its service in the budget, for the processes the budget plans.
BUDGETED = {"online": "online", "ingest-api": "ingest_api", "ingest-worker": "ingest_worker"}


def _documents(paths: Iterator[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def settings():
    return load_cluster_settings({})


@pytest.fixture(scope="module")
def budget(settings) -> floodgate.Budget:
    return floodgate.load_budget(REPO_ROOT / settings.budget)


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    """The base and the simulator component, every resource."""
    paths = [*sorted((DEPLOY / "base").glob("*.yaml")), *sorted((DEPLOY / "components").rglob("*.yaml"))]
    return [d for d in _documents(iter(paths)) if d["kind"] not in ("Kustomization", "Component")]


def _one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_the_committed_manifests_are_the_rendered_ones(settings) -> None:
    """Numbers come from the budget: after changing it, `python -m cluster k8s` rewrites these."""
    for relative, text in manifest_texts(settings).items():
        path = DEPLOY / relative
        assert path.is_file(), f"{path} missing: run `python -m cluster k8s`"
        assert path.read_text() == text, f"{path} is stale: run `python -m cluster k8s`"


def test_every_resource_validates_against_the_kubernetes_schemas(resources) -> None:
    checked = 0
    for resource in resources:
        if resource["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: checked below
        for version in VERSIONS:
            kubernetes_validate.validate(resource, version, strict=True)
        checked += 1
    assert checked >= 20


def test_the_validator_catches_a_misspelt_field(resources) -> None:
    deployment = _one(resources, "Deployment", "online")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


#: The fields of KEDA's ScaledObject and TriggerAuthentication these manifests use (keda.sh/v1alpha1),
#: structurally: KEDA's CRDs are not bundled with the Kubernetes schemas.
_KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "postgresql"},
                        "metadata": {
                            "type": "object",
                            "required": ["query", "targetQueryValue"],
                            "additionalProperties": False,
                            # KEDA reads every metadata value as a string.
                            "properties": {
                                "query": {"type": "string"},
                                "targetQueryValue": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                                "activationTargetQueryValue": {"type": "string", "pattern": r"^[0-9]+$"},
                            },
                        },
                        "authenticationRef": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["secretTargetRef"],
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"enum": ["connection", "password"]},
                        "name": {"type": "string"},
                        "key": {"type": "string"},
                    },
                },
            }
        },
    },
}


def test_keda_resources_are_well_formed_and_scale_the_workers_on_runnable_queued_jobs(
    resources, budget
) -> None:
    keda = [r for r in resources if r["apiVersion"] == "keda.sh/v1alpha1"]
    assert {r["kind"] for r in keda} == set(_KEDA_SCHEMAS)
    for resource in keda:
        jsonschema.validate(resource["spec"], _KEDA_SCHEMAS[resource["kind"]])
    scaled = _one(resources, "ScaledObject", "ingest-worker")["spec"]
    assert _one(resources, "Deployment", scaled["scaleTargetRef"]["name"])
    (trigger,) = scaled["triggers"]
    assert "FROM ingest_jobs WHERE state = 'queued' AND run_at <= now()" in trigger["metadata"]["query"]
    assert int(trigger["metadata"]["targetQueryValue"]) == IngestWorkerSettings().job_concurrency
    auth = _one(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["secretTargetRef"] == [
        {"parameter": "connection", "name": "floodgate-database", "key": "url"}
    ]
    # Without membership, never more workers than the budget divides the database's share by.
    assert (
        1 <= scaled["minReplicaCount"]
        and scaled["maxReplicaCount"] == budget.service("ingest_worker").processes
    )


def test_replicas_and_resources_are_the_budgets(resources, budget) -> None:
    for name, service in BUDGETED.items():
        shape = budget.service(service)
        deployment = _one(resources, "Deployment", name)
        assert deployment["spec"]["replicas"] == shape.processes, name  # one process per pod
        amounts = {"cpu": f"{round(shape.cpu_cores * 1000)}m", "memory": f"{shape.memory_mib}Mi"}
        assert _container(deployment)["resources"] == {"requests": amounts, "limits": amounts}, name
    hpa = _one(resources, "HorizontalPodAutoscaler", "online")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "online"}
    assert hpa["minReplicas"] <= hpa["maxReplicas"] == budget.service("online").processes


def test_ports_probes_and_environment_are_the_local_clusters(resources, settings) -> None:
    """Each pod runs the process `make up` runs, with its environment: the same variables and values,
    except the bind address, the database (a Secret), the budget's path in the image and the
    providers (a ConfigMap and an optional Secret, checked below)."""
    children = {c.name: c for c in cluster_children(settings, envoy_config=Path("/tmp/envoy.yaml"))}
    for name, child in (
        ("online", children["online"]),
        ("ingest-api", children["ingest-api"]),
        ("ingest-worker", children["ingest-worker-1"]),
        ("ratelimit", children["ratelimit"]),
        ("simulator", children["simulator"]),
    ):
        container = _container(_one(resources, "Deployment", name))
        assert container["command"] == ["python", *child.argv[1:]], name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probe_port = ports["http"]
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, (name, probe)
        env = {e["name"]: e for e in container["env"]}
        for var, value in child.env.items():
            if var.startswith("FLOODGATE_"):
                continue  # the providers
            assert var in env, (name, var)
            if var.endswith("_HOST"):
                assert env[var]["value"] == "0.0.0.0"
            elif var.endswith("_DATABASE_URL"):
                assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "floodgate-database", "key": "url"}
            elif var.endswith("_BUDGET_FILE"):
                assert env[var]["value"] == BUDGET_FILE
            elif var == "RATELIMIT_CONFIG":
                assert env[var]["value"] == "/app/config/ratelimit.yaml"
            else:
                assert env[var]["value"] == value, (name, var)
            if var.endswith("_PORT") and not var.endswith("_GRPC_PORT"):
                assert int(value) in ports.values(), (name, var)
        service = _one(resources, "Service", name)
        assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values()), name
        assert probe_port in {p["port"] for p in service["spec"]["ports"]}
    # The providers: every service that calls them reads the same ConfigMap.
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    (providers,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "floodgate-providers"]
    literal_names = {literal.split("=", 1)[0] for literal in providers["literals"]}
    local = {v for v in children["online"].env if v.startswith("FLOODGATE_") and not v.endswith("_API_KEY")}
    assert literal_names == local
    for name in ("online", "ingest-api", "ingest-worker"):
        sources = _container(_one(resources, "Deployment", name))["envFrom"]
        assert {"configMapRef": {"name": "floodgate-providers"}} in sources


def test_services_carry_the_names_the_gateway_resolves_and_select_their_pods(resources) -> None:
    """Envoy's config is rendered with compose's host names (`render --compose`); headless Services
    give it every ready pod, so it balances and ejects per pod."""
    for host in set(COMPOSE_HOSTS.values()):
        service = _one(resources, "Service", host)
        assert service["spec"].get("clusterIP") == "None", host
        deployment = _one(resources, "Deployment", host)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), host
    init = _one(resources, "Deployment", "gateway")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][:5] == ["python", "-m", "cluster.envoy", "render", "--compose"]


def test_graceful_termination(resources) -> None:
    """A worker pod outlives a job lease after SIGTERM: running jobs finish (shutdown grace) and no
    lease is taken over while its attempt still writes; the others drain their requests."""
    worker = IngestWorkerSettings()
    pod = _one(resources, "Deployment", "ingest-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > worker.lease_seconds + worker.shutdown_grace
    for name in ("online", "ingest-api", "gateway"):
        spec = _one(resources, "Deployment", name)["spec"]["template"]["spec"]
        stop = _container(_one(resources, "Deployment", name))["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > stop + 10, name  # + the services' own grace


def test_only_the_gateway_reaches_the_services(resources, settings) -> None:
    """The tenant header is trusted only from the gateway: every pod's ingress is denied by default,
    and the services that take requests admit only the gateway's pods (and labelled scrapers)."""
    policies = {r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    deployments = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    assert deployments <= set(policies), "every workload has its own policy"

    def peers(name: str, port: int) -> list[dict[str, Any]]:
        return [
            peer
            for rule in policies[name]["ingress"]
            if any(p["port"] == port for p in rule["ports"])
            for peer in rule.get("from", [{"anywhere": True}])
        ]

    gateway = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
    scrapers = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"floodgate.dev/scraper": "true"}}}
    for name, port in (("online", settings.online_port), ("ingest-api", settings.ingest_api_port)):
        assert peers(name, port) == [gateway, scrapers], name
    assert peers("ratelimit", settings.ratelimit_port) == [gateway]
    assert peers("redis", 6379) == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ratelimit"}}}]
    # The gateway's listener is open; its admin port (runtime flags) is not in any rule.
    assert peers("gateway", settings.gateway_port) == [{"anywhere": True}]
    assert peers("gateway", settings.envoy_admin_port) == []
    assert [p["port"] for p in _one(resources, "Service", "gateway")["spec"]["ports"]] == [
        settings.gateway_port
    ]


def test_the_example_overlay_scales_past_the_plan_only_with_membership_and_within_the_database(
    resources, budget
) -> None:
    """At the autoscalers' maxima, a service runs past its planned processes only where its pods have
    membership on, and every process's database pool still fits (the pre-flight check of `make up`)."""
    patches = {p["kind"]: p for p in _documents(iter([OVERLAY / "scaling.yaml"]))}
    at_most = {
        "online": patches["HorizontalPodAutoscaler"]["spec"]["maxReplicas"],
        "ingest-api": _one(resources, "Deployment", "ingest-api")["spec"]["replicas"],
        "ingest-worker": patches["ScaledObject"]["spec"]["maxReplicaCount"],
    }
    counts = {}
    for name, service in BUDGETED.items():
        env = {e["name"]: e.get("value") for e in _container(_one(resources, "Deployment", name))["env"]}
        prefix = name.upper().replace("-", "_") + "_"
        if at_most[name] > budget.service(service).processes:
            assert env[f"{prefix}MEMBERSHIP"] == "1", name
        counts[service] = (at_most[name], f"{name} at most")
    check_budget(REPO_ROOT / "config" / "budget.toml", processes=counts, membership=True)
    # The keys the example ships are the committed sample, nothing else.
    assert (OVERLAY / "api_keys.yaml").read_text() == (
        REPO_ROOT / "config" / "api_keys.sample.yaml"
    ).read_text()


@pytest.mark.realtime  # runs kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
def test_the_example_overlay_builds_and_validates() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    for document in documents:
        if not document["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(document, VERSIONS[-1], strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "floodgate", document["metadata"]["name"]
    secrets = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    assert {"floodgate-database", "floodgate-api-keys"} <= secrets
    images = {
        c["image"]
        for d in documents
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        + d["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert "registry.example.com/floodgate:0.1.0" in images and "floodgate:local" not in images
    hpa = next(d for d in documents if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 2 and hpa["spec"]["metrics"]  # the patch merged, not replaced
