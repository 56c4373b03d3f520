"""Fixtures for running ``python -m cluster`` as a subprocess on free ports, with its data in tmp."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT
from harness.services import cluster_env as environment


@pytest.fixture
def cluster_env(tmp_path: Path, realtime) -> dict[str, str]:
    """Environment for a cluster that uses only free ports and ``tmp_path/data`` (harness/services.py)."""
    return environment(
        tmp_path / "data", ready_timeout=40, FLOODGATE_BUDGET=str(REPO_ROOT / "config" / "budget.toml")
    )


@pytest.fixture
def cluster_command() -> list[str]:
    return [sys.executable, "-m", "cluster"]
