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


def test_with_membership_the_ingest_workers_may_exceed_their_plan_within_the_database() -> None:
    """The ingest workers join membership: three of them divide embed and fetch among themselves, and
    their pools (10 connections each) still fit; the ingest API has database pools only."""
    check_budget(BUDGET, processes={"ingest_worker": (3, "FLOODGATE_INGEST_WORKERS")}, membership=True)
    check_budget(BUDGET, processes={"ingest_api": (2, "FLOODGATE_INGEST_API_REPLICAS")}, membership=True)
    too_many = ClusterSettings(online_replicas=2, ingest_workers=3).processes()
    with pytest.raises(
        PreflightError, match=r"FLOODGATE_ONLINE_REPLICAS=2, FLOODGATE_INGEST_WORKERS=3: .* 94 connections"
    ):
        check_budget(BUDGET, processes=too_many, membership=True)


def test_with_membership_a_service_that_does_not_join_keeps_to_its_plan(tmp_path: Path) -> None:
    """A provider share held by a service whose processes do not join (here the ingest API, given half
    of fetch): each of its processes would take the planned share, so no more than planned may run."""
    budget = tmp_path / "budget.toml"
    text = BUDGET.read_text()
    assert "shares = { ingest_worker = 1.0 }\n" in text
    budget.write_text(
        text.replace(
            "shares = { ingest_worker = 1.0 }\n", "shares = { ingest_worker = 0.5, ingest_api = 0.5 }\n", 1
        )
    )
    with pytest.raises(
        PreflightError, match=r"FLOODGATE_INGEST_API_REPLICAS=2 .* do not join membership .*shares of fetch"
    ):
        check_budget(budget, processes={"ingest_api": (2, "FLOODGATE_INGEST_API_REPLICAS")}, membership=True)
    check_budget(budget, processes={"ingest_worker": (3, "FLOODGATE_INGEST_WORKERS")}, membership=True)
