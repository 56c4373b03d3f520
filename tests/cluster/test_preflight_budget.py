from pathlib import Path

import pytest

from cluster.preflight import PreflightError, check_budget
from cluster.settings import ClusterSettings

BUDGET = Path(__file__).resolve().parents[2] / "config" / "budget.toml"


def test_the_committed_budget_plans_the_default_process_counts() -> None:
    # Raises when a default count (FLOODGATE_INGEST_WORKERS, _ONLINE_REPLICAS...) outgrows the budget.
    check_budget(BUDGET, processes=ClusterSettings().processes())
    # fewer processes than planned only under-uses the budget
    check_budget(BUDGET, processes={"ingest_worker": (0, "FLOODGATE_INGEST_WORKERS")})


def test_more_workers_than_the_budget_plans_is_refused() -> None:
    with pytest.raises(PreflightError, match=r"FLOODGATE_INGEST_WORKERS=3 but .* plans 2 ingest_worker"):
        check_budget(BUDGET, processes={"ingest_worker": (3, "FLOODGATE_INGEST_WORKERS")})


def test_more_online_processes_than_planned_need_membership() -> None:
    """Two online processes on a budget that plans one: each would take the whole share; with
    membership on, the live processes divide it instead."""
    settings = ClusterSettings(online_replicas=2)
    with pytest.raises(
        PreflightError, match=r"FLOODGATE_ONLINE_REPLICAS=2 but .* plans 1 online .*MEMBERSHIP"
    ):
        check_budget(BUDGET, processes=settings.processes())
    check_budget(BUDGET, processes=settings.processes(), membership=True)


def test_invalid_budget_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "budget.toml"
    bad.write_text(BUDGET.read_text().replace("replicas = 2", "replicas = -1", 1))
    with pytest.raises(PreflightError, match=r"services\.ingest_worker\.replicas"):
        check_budget(bad)


def test_with_membership_the_database_pools_of_the_processes_that_run_must_still_fit() -> None:
    """Each process opens its pool at the planned size whatever the membership: three online
    processes of 24 connections and the others' pools are more than the 90 the database leaves."""
    fits = ClusterSettings(online_replicas=2).processes()
    check_budget(BUDGET, processes=fits, membership=True)
    too_many = ClusterSettings(online_replicas=3).processes()
    with pytest.raises(PreflightError, match=r"FLOODGATE_ONLINE_REPLICAS=3.*need 108 connections.*leaves 90"):
        check_budget(BUDGET, processes=too_many, membership=True)


def test_with_membership_only_the_services_that_divide_live_may_exceed_their_plan() -> None:
    """The ingest workers do not join membership: three of them would each take the planned share of
    embed and fetch. The ingest API has database pools only, which are checked as such."""
    with pytest.raises(
        PreflightError, match=r"FLOODGATE_INGEST_WORKERS=3 .* do not join membership .*embed, fetch"
    ):
        check_budget(BUDGET, processes={"ingest_worker": (3, "FLOODGATE_INGEST_WORKERS")}, membership=True)
    check_budget(BUDGET, processes={"ingest_api": (2, "FLOODGATE_INGEST_API_REPLICAS")}, membership=True)
