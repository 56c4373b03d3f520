"""config/loadtest.toml against the services it loads: each request template's path is the route
the service serves (the file is the toolkit's; the routes are the reference system's)."""

from __future__ import annotations

from pathlib import Path

import chassis
from floodgate._budget import TENANT_PATTERN
from floodgate._load_scenario import load_scenarios

from services.ingest._api import JOBS_PATH
from services.online._endpoints import ENDPOINTS

REPO_FILE = Path(__file__).resolve().parent.parent / "config" / "loadtest.toml"


def test_the_shipped_templates_point_at_the_services_routes():
    spec = load_scenarios(REPO_FILE)
    routes = {e.name: e.path for e in ENDPOINTS} | {"omnirag_submit": JOBS_PATH, "omnirag_fetch": JOBS_PATH}
    assert {name: t.path for name, t in spec.requests.items()} == routes
    assert {name for name, t in spec.requests.items() if t.kind == "job"} == {
        "omnirag_submit",
        "omnirag_fetch",
    }


def test_the_toolkits_tenant_rule_is_the_services():
    # the budget's [tenants] and the scenario file's tenants use it
    assert TENANT_PATTERN == chassis.TENANT_PATTERN
