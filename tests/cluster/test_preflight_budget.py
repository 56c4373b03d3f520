from pathlib import Path

import pytest

from cluster.preflight import PreflightError, check_budget
from cluster.settings import ClusterSettings

BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


def test_the_committed_budget_plans_the_default_worker_count() -> None:
    # Raises when the cluster's default FLOODGATE_INGEST_WORKERS outgrows what the budget plans.
    check_budget(BUDGET, ingest_workers=ClusterSettings().ingest_workers)
    check_budget(BUDGET, ingest_workers=0)  # fewer processes than planned only under-uses the budget


def test_more_workers_than_the_budget_plans_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"FLOODGATE_INGEST_WORKERS=3 but .* plans 2 ingest_worker"):
        check_budget(BUDGET, ingest_workers=3)


def test_invalid_budget_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "budget.toml"
    bad.write_text(BUDGET.read_text().replace("replicas = 2", "replicas = -1", 1))
    with pytest.raises(PreflightError, match=r"services\.ingest_worker\.replicas"):
        check_budget(bad)
