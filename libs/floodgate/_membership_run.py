"""Running a member: join, heartbeat, resize the gates, leave — the I/O around `Membership`.

`open_membership` is what a service wires: it joins before the service serves (holding nothing
until the store answers, then — when others are live — until they have given their share
back, bounded by ``join_wait``), keeps heartbeating in the background, resizes each gate in
place (`Gate.resize`: calls in flight are never dropped) whenever its share changes, and leaves
the store on exit, so that the others take its share at once instead of after its lease.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

from ._errors import FloodgateError
from ._gate import Gate
from ._membership import Membership, MembershipPolicy, service_totals
from ._membership_store import MembershipStore
from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._budget import Budget

__all__ = ["open_membership", "run_membership"]

_log = structlog.get_logger("floodgate")

# A store that failed or did not answer: the member carries on with what it holds (and fences
# itself in time); anything else (a missing table, a bug) is not for a heartbeat loop to hide.
_STORE_FAILURES = (FloodgateError, OSError, TimeoutError)


class _Shares:
    """Applies a member's limits: each changed one once, through ``resize`` (by default the gate's
    own `Gate.resize`; a service passes `Dependency.resize`, which also caps its learned limit)."""

    def __init__(self, gates: Mapping[str, Gate], resize: Callable[[str, int], None] | None):
        self._gates = gates
        self._resize = resize or (lambda name, capacity: gates[name].resize(capacity))
        self._applied = {name: gate.capacity for name, gate in gates.items()}

    def apply(self, limits: Mapping[str, int]) -> None:
        for name, capacity in limits.items():
            if name in self._gates and self._applied.get(name) != capacity:
                _log.info(
                    "floodgate.share_resized",
                    dependency=name,
                    capacity_from=self._applied.get(name),
                    capacity_to=capacity,
                )
                self._resize(name, capacity)
                self._applied[name] = capacity


class _Report:
    """Publishes a member's state on its registry (metrics off without one)."""

    def __init__(self, membership: Membership, registry: CollectorRegistry | None):
        self._membership = membership
        metrics = metrics_for(registry)
        self._on = metrics is not None
        if metrics is not None:
            service = membership.service
            self._live = metrics.membership_live.labels(service)
            self._generation = metrics.membership_generation.labels(service)
            self._fenced = metrics.membership_fenced.labels(service)
            self._ok = metrics.membership_heartbeats.labels(service, "ok")
            self._failed = metrics.membership_heartbeats.labels(service, "failed")

    def heartbeat(self, ok: bool) -> None:
        if not self._on:
            return
        (self._ok if ok else self._failed).inc()
        stats = self._membership.statistics()
        self._live.set(stats.live_members)
        self._generation.set(stats.generation)
        self._fenced.set(int(stats.fenced))


async def run_membership(
    store: MembershipStore,
    membership: Membership,
    gates: Mapping[str, Gate],
    *,
    resize: Callable[[str, int], None] | None = None,
    info: str = "",
    join_wait: float = 0.0,
    registry: CollectorRegistry | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Join (the first heartbeat must succeed: its error propagates), report started once this
    member holds its share or ``join_wait`` seconds have passed, then heartbeat until cancelled;
    leave (shielded, bounded) on the way out. ``gates`` are read for their calls in flight;
    ``resize(name, capacity)`` applies a new share (default: ``gates[name].resize``)."""
    policy = membership.policy
    shares = _Shares(gates, resize)
    report = _Report(membership, registry)
    service, member_id = membership.service, membership.member_id

    def in_use() -> dict[str, int]:
        return {name: gate.statistics().in_use for name, gate in gates.items()}

    async def beat() -> int:
        started = anyio.current_time()
        shares.apply(membership.check_fence(started))
        ack = membership.ack(in_use())
        last_ok = membership.last_ok
        # A slow answer is still an answer, up to the moment this member must fence itself.
        if last_ok is not None and not membership.statistics().fenced:
            give_up = max(started, last_ok + policy.fence)
        else:
            give_up = started + policy.expiry
        try:
            with anyio.fail_after(give_up - started):
                view = await store.heartbeat(
                    service, member_id, acked_generation=ack, expiry=policy.expiry, info=info
                )
        except _STORE_FAILURES as exc:
            limits = membership.on_failure(anyio.current_time())
            report.heartbeat(ok=False)
            _log.warning(
                "floodgate.membership_heartbeat_failed", service=service, member=member_id, error=repr(exc)
            )
        else:
            before = membership.statistics().generation
            limits = membership.on_view(view, started)
            report.heartbeat(ok=True)
            if view.generation != before:
                _log.info(
                    "floodgate.membership_changed",
                    service=service,
                    member=member_id,
                    generation=view.generation,
                    live=len(view.members),
                )
        shares.apply(limits)
        return ack

    def pause() -> float:
        if membership.ack(in_use()) > sent:
            return 0.0  # an acknowledgement the others wait for: send it now
        wait = policy.heartbeat if membership.settled else policy.heartbeat / 4
        if membership.last_ok is not None and not membership.statistics().fenced:
            # Wake up to fence on time, not at the next heartbeat after the fence is due.
            wait = min(wait, max(0.0, membership.last_ok + policy.fence - anyio.current_time()))
        return wait

    shares.apply(membership.limits)  # nothing until the store has answered
    started = anyio.current_time()
    sent = membership.ack(in_use())
    view = await store.heartbeat(service, member_id, acked_generation=sent, expiry=policy.expiry, info=info)
    shares.apply(membership.on_view(view, started))
    report.heartbeat(ok=True)
    join_deadline = started + join_wait
    reported = False
    try:
        while True:
            if not reported and (membership.settled or anyio.current_time() >= join_deadline):
                task_status.started()
                reported = True
            await anyio.sleep(pause())
            sent = await beat()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(policy.heartbeat * 2):
            try:
                await store.leave(service, member_id)
            except _STORE_FAILURES as exc:  # the lease expires on its own
                _log.warning(
                    "floodgate.membership_leave_failed", service=service, member=member_id, error=repr(exc)
                )


def new_member_id() -> str:
    """A member id that is unique across restarts (a restarted process is a new member)."""
    return uuid.uuid4().hex[:12]


@asynccontextmanager
async def open_membership(
    store: MembershipStore,
    *,
    budget: Budget,
    service: str,
    gates: Mapping[str, Gate],
    resize: Callable[[str, int], None] | None = None,
    policy: MembershipPolicy | None = None,
    member_id: str | None = None,
    join_wait: float | None = None,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Membership]:
    """Be a live member of ``service`` while the block runs; its provider gates (``gates``, by
    dependency name) follow this process's share, applied by ``resize(name, capacity)`` (default:
    the gate's own `Gate.resize`; with `Dependencies`, pass ``lambda name, n: deps[name].resize(n)``
    so that a learned limit stays under the share). ``join_wait`` (default: the lease) bounds how
    long entering waits for the share when others must give theirs back first. ``registry`` (a
    prometheus ``CollectorRegistry``) turns on the ``floodgate_membership_*`` metrics."""
    policy = policy or MembershipPolicy()
    membership = Membership(member_id or new_member_id(), service, service_totals(budget, service), policy)
    info = f"{socket.gethostname()}:{os.getpid()}"
    async with anyio.create_task_group() as tasks:
        run = partial(
            run_membership,
            resize=resize,
            info=info,
            registry=registry,
            join_wait=policy.expiry if join_wait is None else join_wait,
        )
        await tasks.start(run, store, membership, gates)
        try:
            yield membership
        finally:
            tasks.cancel_scope.cancel()
