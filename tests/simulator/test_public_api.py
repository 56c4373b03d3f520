"""The simulator's public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import services.upstreams as upstreams


def test_all_names_exist_and_nothing_private_leaks() -> None:
    for name in upstreams.__all__:
        assert hasattr(upstreams, name), name
    assert sorted(upstreams.__all__) == sorted(set(upstreams.__all__))
    assert not [n for n in upstreams.__all__ if n.startswith("_")]


def test_documented_tasks_and_apis() -> None:
    assert upstreams.TASKS == ("answer", "expand_queries", "extract_findings", "score_criterion")
    assert upstreams.APIS == ("chat", "embeddings", "rerank", "search", "fetch")
