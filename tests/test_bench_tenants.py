"""bench/bench_tenants.py checks, before it starts a cluster, that the victim's own share of the
dealBrain door and of the LLM gate holds its load (Little's law at the budget's typical latencies):
else it would measure the victim's share, not the flood's effect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_tenants
from bench_tenants import VICTIM, bench_budget, victim_fit

from services.online._admission import endpoint_capacity


def test_the_victims_share_holds_its_load_with_the_committed_budget(tmp_path: Path) -> None:
    budget = bench_budget(tmp_path / "budget.toml")
    capacity = endpoint_capacity(budget, "deal_brain")
    fit = victim_fit(budget, capacity)
    # 0.3 x 40/s: 12/s x 0.6 s at the door (of its half), 12/s x 0.4 s at the LLM (of its 8 of 16)
    door = capacity.in_flight
    assert fit["deal_brain"] == {"need": 7.2, "share": door // 2, "of": door}
    assert fit["llm"] == {"need": 4.8, "share": 8, "of": 16}
    # with the provider taking 12 (the pushback phase) the gate learns 12, and B's share is 6
    assert fit["llm_pushback"] == {"need": 4.8, "share": 6, "of": 12}
    assert fit["headroom"] == pytest.approx(6 / 4.8, abs=0.01)


def test_a_share_too_small_for_the_victims_load_shows_below_one(tmp_path: Path, monkeypatch) -> None:
    budget = bench_budget(tmp_path / "budget.toml")
    # the victim at 0.7x capacity needs 11.2 of the LLM where its share is 8
    monkeypatch.setattr(bench_tenants, "VICTIM_RATE", 0.7)
    fit = victim_fit(budget, endpoint_capacity(budget, "deal_brain"))
    assert fit["llm"] == {"need": 11.2, "share": 8, "of": 16}
    assert fit["headroom"] < 1.0
    assert budget.tenants.share_limit(VICTIM, "llm", 16) == 8
