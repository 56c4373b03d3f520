"""The simulator's public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import services.simulator as simulator


def test_all_names_exist_and_nothing_private_leaks() -> None:
    for name in simulator.__all__:
        assert hasattr(simulator, name), name
    assert sorted(simulator.__all__) == sorted(set(simulator.__all__))
    assert not [n for n in simulator.__all__ if n.startswith("_")]


def test_documented_tasks_and_apis() -> None:
    assert simulator.TASKS == ("answer", "expand_queries", "extract_findings", "score_criterion")
    assert simulator.APIS == ("chat", "embeddings", "rerank", "search", "fetch")
