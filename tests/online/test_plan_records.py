"""The budget's ``calls`` and ``critical_path`` per endpoint (what `floodgate plan` predicts from) are
the endpoint records' (what the doors are sized from): one source, checked at start-up."""

from __future__ import annotations

import chassis
import pytest

from services.online._admission import endpoint_capacity, record_problems

from .conftest import make_budget, online_harness


def test_the_repository_budget_states_what_the_endpoints_do() -> None:
    assert record_problems(make_budget()) == []


def test_the_plan_predicts_what_the_door_is_sized_from() -> None:
    from floodgate._plan import make_plan

    budget = make_budget()
    plan = {c.endpoint: c for c in make_plan(budget).capacities}
    for name in ("deal_brain", "shadow_hunter", "nexus_assess"):
        door = endpoint_capacity(budget, name)
        assert plan[name].bottleneck == door.bottleneck
        # the plan's dependency limit (one process here) is the door's rate
        assert next(lim.rate for lim in plan[name].limits if lim.name == door.bottleneck) == pytest.approx(
            door.rps
        )


@pytest.mark.parametrize(
    ("endpoint", "patch", "problem"),
    [
        (
            "shadow_hunter",
            {"calls": {"llm": 4, "search": 4}},
            "endpoints.shadow_hunter.calls: the endpoint makes",
        ),
        (
            "deal_brain",
            {"critical_path": "embed + db + search + rerank + llm"},
            "endpoints.deal_brain.critical_path: takes 625 ms at the typical latencies, the endpoint's 600 ms",
        ),
    ],
)
def test_a_budget_that_disagrees_with_the_records(endpoint, patch, problem) -> None:
    assert any(p.startswith(problem) for p in record_problems(make_budget({"endpoints": {endpoint: patch}})))


async def test_disagreement_stops_start_up(autojump_clock) -> None:
    budget = make_budget({"endpoints": {"nexus_assess": {"calls": {"llm": 1}}}})
    with pytest.raises(chassis.StartupError) as caught:
        async with online_harness(budget=budget):
            pass
    assert "endpoints.nexus_assess.calls: the endpoint makes { llm = 4 }" in str(caught.value)
