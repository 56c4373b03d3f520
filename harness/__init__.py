"""The harness the tests and the benchmarks share: free ports, bounded readiness waits, and the real
parts started as child processes on loopback (the embedded PostgreSQL, Envoy, the services).

One module each: `harness.ports` (free ports), `harness.ready` (waits with deadlines),
`harness.processes` (a child process and its log), `harness.postgres` (the embedded PostgreSQL),
`harness.envoy` (Envoy on the committed config), `harness.services` (the project's services, the whole
cluster, and `harness.upstream`, a stand-in upstream). Nothing here knows about pytest: a fixture that
starts a process through it requests the ``realtime`` fixture itself (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT"]

#: the repository's root: every child process runs there (``python -m services...``)
REPO_ROOT = Path(__file__).resolve().parent.parent
