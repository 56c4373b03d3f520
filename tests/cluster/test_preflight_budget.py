from pathlib import Path

import pytest

from cluster.preflight import PreflightError, check_budget

BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


def test_the_committed_budget_plans_the_default_worker_count() -> None:
    check_budget(BUDGET, ingest_workers=2)
    check_budget(BUDGET, ingest_workers=0)  # fewer processes than planned only under-uses the budget


def test_more_workers_than_the_budget_plans_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"FLOODGATE_INGEST_WORKERS=3 but .* plans 2 ingest_worker"):
        check_budget(BUDGET, ingest_workers=3)


def test_invalid_budget_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "budget.toml"
    bad.write_text(BUDGET.read_text().replace("replicas = 2", "replicas = -1", 1))
    with pytest.raises(PreflightError, match="services.ingest_worker.replicas"):
        check_budget(bad)
