"""The gateway's ``/openapi.json`` against the real thing: the whole local cluster behind Envoy, fuzzed
from that document by a property-based API tester (schemathesis). For every operation it generates
requests, valid and invalid, and checks each answer: never a 5xx, and a status, content type and body
that the document promises. Methods the document does not list get 405 with ``Allow`` (the services'
chassis, or Envoy for the gateway's own paths).
"""

from __future__ import annotations

import itertools

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ._cluster import run_cluster

# the cluster fixture waits up to 120 s for the cluster (its set-up counts in the first test's time)
pytestmark = pytest.mark.timeout(180)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation and mode (valid, invalid): every operation of the document is exercised
#: within a few seconds; the search is deterministic, so a failure reproduces.
EXAMPLES = 10
#: A caller may ask for less time than an operation's deadline; asking for 1 ms makes the 504 that
#: the document promises, which is not what this test looks for.
CALLER_DEADLINE = "x-floodgate-deadline-ms"


#: The fuzzer's requests are spread over this many tenants, so that the per-tenant rate limits
#: (a few requests a second on some routes) leave most of them to the services.
TENANTS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, realtime):
    base = tmp_path_factory.mktemp("openapi-cluster")
    keys = {f"fuzz{i}": {"keys": [f"fg_test_fuzz{i}_0123456789ab"]} for i in range(TENANTS)}
    keys_file = base / "api_keys.yaml"
    keys_file.write_text(yaml.safe_dump({"tenants": keys}))
    with run_cluster(base, api_keys_file=keys_file) as running:
        running["keys"] = [{"x-api-key": k["keys"][0]} for k in keys.values()]
        yield running


def test_the_document_is_served_without_a_key_and_names_every_route(cluster) -> None:
    doc = httpx.get(f"{cluster['gateway']}/openapi.json", timeout=5).json()
    assert doc["openapi"] == "3.1.0"
    assert {"/v1/deal-brain/answers", "/v1/omnirag/jobs/{job_id}/cancel", "/healthz/ingest"} <= set(
        doc["paths"]
    )
    assert "x-floodgate-tenant" not in str(doc["paths"])


def test_a_method_a_path_does_not_serve_is_405_with_allow_through_the_gateway(cluster) -> None:
    with httpx.Client(base_url=cluster["gateway"], headers=cluster["keys"][0], timeout=5) as client:
        for method, path, allowed in (
            ("GET", "/v1/deal-brain/answers", "OPTIONS, POST"),  # the online service's chassis
            ("DELETE", "/v1/omnirag/jobs", "GET, HEAD, OPTIONS, POST"),  # the ingest API's
            ("PUT", "/v1/omnirag/jobs/1/cancel", "OPTIONS, POST"),
            ("POST", "/healthz/online", "GET, HEAD, OPTIONS"),
            ("POST", "/openapi.json", "GET, HEAD"),  # Envoy's own
        ):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allowed
            assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_gateway_keeps_its_documented_contract(cluster) -> None:
    schema = schemathesis.openapi.from_url(f"{cluster['gateway']}/openapi.json")
    schema.config.update(base_url=cluster["gateway"])
    keys = itertools.cycle(cluster["keys"])
    operations = [result.ok() for result in schema.get_all_operations()]
    # every operation but the document's own (schemathesis leaves out the URL it loaded the schema from)
    documented = {f"{m.upper()} {p}" for p, item in schema.raw_schema["paths"].items() for m in item}
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def conforms(case: schemathesis.Case) -> None:
                if case.headers:
                    case.headers.pop(CALLER_DEADLINE, None)
                case.call_and_validate(headers=next(keys), checks=CHECKS, timeout=15)

            try:
                conforms()
            except Unsatisfiable:
                # nothing to make invalid (no body, no parameter with a constraint): valid cases only
                assert mode is GenerationMode.NEGATIVE, operation.label
