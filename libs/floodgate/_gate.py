"""Gate: a capacity limiter with a bounded, tenant-fair wait.

A `Gate` is a bulkhead in front of one dependency: at most ``capacity`` holders, at most
``max_waiters`` waiting, no one waiting longer than ``max_wait`` (or than their deadline
allows), slots handed out round-robin between tenants. With a tenant table whose
``tenant_share`` covers the gate, one tenant holds at most its share of the slots and of the
waiting places, and the rest stays free for the others. When the answer is "no", it is
`Overloaded` (`TenantShareExceeded` when it is the tenant's share), and it comes fast.

The queue discipline lives in `_FairQueue`, a small synchronous state machine; the `Gate`
adds the one await (waiting for a grant) and the bookkeeping for cancellation around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import structlog

from ._errors import Overloaded, TenantShareExceeded
from ._metrics import metrics_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._tenants import TenantTable

__all__ = ["DEFAULT_TENANT", "Gate", "GateStatistics"]

DEFAULT_TENANT = "default"

_log = structlog.get_logger("floodgate")


class _Waiter:
    __slots__ = ("enqueued_at", "event", "granted", "tenant")

    def __init__(self, tenant: str, enqueued_at: float):
        self.tenant = tenant
        self.enqueued_at = enqueued_at
        self.event = anyio.Event()
        self.granted = False


class _FairQueue:
    """Waiters grouped by tenant: FIFO within a tenant, weighted round-robin across tenants.

    The tenant at the head of the ring is served up to its weight in a row, then moves to the
    back. A tenant that arrives joins the back of the ring, so no tenant is served twice in a
    row beyond its weight while another one waits. A tenant that may not be served now (at its
    share: ``eligible`` says no) gives up its turn and moves to the back.
    """

    def __init__(
        self, weights: Mapping[str, int] | None = None, *, weight: Callable[[str], int] | None = None
    ):
        table = dict(weights or {})
        #: a tenant's turns in a row (``weight`` when given, else ``weights``, else 1)
        self.weight: Callable[[str], int] = weight or (lambda tenant: table.get(tenant, 1))
        self._queues: dict[str, deque[_Waiter]] = {}
        self._ring: deque[str] = deque()
        self._served_in_turn = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, waiter: _Waiter) -> None:
        queue = self._queues.get(waiter.tenant)
        if queue is None:
            queue = self._queues[waiter.tenant] = deque()
            self._ring.append(waiter.tenant)
        queue.append(waiter)
        self._len += 1

    def waiting_of(self, tenant: str) -> int:
        queue = self._queues.get(tenant)
        return 0 if queue is None else len(queue)

    def waiting_unless(self, excluded: Callable[[str], bool]) -> int:
        return sum(len(queue) for tenant, queue in self._queues.items() if not excluded(tenant))

    def has_eligible(self, eligible: Callable[[str], bool]) -> bool:
        return any(eligible(tenant) for tenant in self._ring)

    def pop(self, eligible: Callable[[str], bool] | None = None) -> _Waiter | None:
        """The next waiter in turn (None: every waiting tenant is ineligible)."""
        ring = self._ring
        if eligible is not None and not eligible(ring[0]):
            for skipped in range(1, len(ring)):
                if eligible(ring[skipped]):
                    break
            else:
                return None
            ring.rotate(-skipped)
            self._served_in_turn = 0
        tenant = ring[0]
        queue = self._queues[tenant]
        waiter = queue.popleft()
        self._len -= 1
        self._served_in_turn += 1
        if not queue:
            del self._queues[tenant]
            self._ring.popleft()
            self._served_in_turn = 0
        elif self._served_in_turn >= self.weight(tenant):
            self._ring.rotate(-1)
            self._served_in_turn = 0
        return waiter

    def remove(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.tenant]
        queue.remove(waiter)
        self._len -= 1
        if not queue:
            del self._queues[waiter.tenant]
            if self._ring[0] == waiter.tenant:
                self._served_in_turn = 0
            self._ring.remove(waiter.tenant)

    def by_tenant(self) -> dict[str, int]:
        return {tenant: len(queue) for tenant, queue in self._queues.items()}


@dataclass(frozen=True)
class GateStatistics:
    """A snapshot of a `Gate`."""

    name: str
    capacity: int
    in_use: int
    waiting: int
    max_waiters: int
    max_wait: float
    in_use_by_tenant: Mapping[str, int] = field(default_factory=dict)
    waiting_by_tenant: Mapping[str, int] = field(default_factory=dict)
    granted_total: int = 0
    rejected_total: int = 0
    #: of ``rejected_total``: refused because the tenant held its share (`TenantShareExceeded`)
    rejected_share_total: int = 0


class Gate:
    """At most ``capacity`` concurrent holders, with a bounded and fair wait for the rest.

    ::

        gate = Gate("llm", capacity=8, max_waiters=32, max_wait=1.0)
        async with gate.slot(tenant="t1"):
            ...  # at most 8 tasks are here at once

    A caller that finds no free slot waits in its tenant's FIFO queue; tenants are served
    round-robin (``weights`` lets a tenant take several slots per turn). The caller gets
    `Overloaded` (with ``retry_after``):

    - at once, when ``max_waiters`` callers are already waiting (or ``max_wait`` is 0);
    - after ``max_wait`` seconds without a slot;
    - at ``deadline - start_margin`` when the caller's cancel-scope deadline comes first,
      so that the caller learns "overloaded", not "timed out", and can still answer.

    With ``tenants`` (a `TenantTable`), each tenant's turns are its ``weight``, and when the
    table gives the gate a share (``tenant_share`` of the dependency named ``name``, or a
    tenant's override) a tenant holds at most `TenantTable.share_limit` of the ``capacity``
    slots and as large a share of the ``max_waiters`` places. A tenant at its share waits for
    one of its own slots to come back; a tenant whose places are all taken, or whose wait ends
    while it still holds its share, gets `TenantShareExceeded`. Other tenants are unaffected:
    free slots go to them past the capped tenant's waiters. With one tenant alone the cap still
    applies: a share is what a tenant can count on, not what is left over.

    A free slot is never taken past a waiter that could have it (`acquire_nowait` raises
    `anyio.WouldBlock` while such a waiter waits). Cancellation at any point leaves the gate consistent: a cancelled waiter
    leaves the queue, and a slot granted to a waiter that was cancelled at the same moment is
    passed on to the next one.

    ``slot()`` does not yield when a slot is free: the body is expected to await. Release with
    the same tenant you acquired with (``slot()`` does it for you).
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        *,
        max_waiters: int,
        max_wait: float,
        weights: Mapping[str, int] | None = None,
        tenants: TenantTable | None = None,
        start_margin: float = 0.0,
        retry_after: float | None = None,
        registry: CollectorRegistry | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        if max_waiters < 0:
            raise ValueError(f"max_waiters must be >= 0, not {max_waiters}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, not {max_wait}")
        if weights and min(weights.values()) < 1:
            raise ValueError("weights must be >= 1")
        if weights and tenants is not None:
            raise ValueError("give weights or tenants (whose table has the weights), not both")
        self.name = name
        self.capacity = capacity
        self.max_waiters = max_waiters
        self.max_wait = max_wait
        self.start_margin = start_margin
        self.retry_after = retry_after if retry_after is not None else max(1.0, max_wait)
        if tenants is not None:
            self._queue = _FairQueue(weight=lambda tenant: tenants.policy(tenant).weight)
        else:
            self._queue = _FairQueue(weights)
        #: the tenant table when it caps this gate (None: every tenant may use every slot)
        self._tenants = tenants if tenants is not None and tenants.has_share(name) else None
        self._eligible = self._under_share if self._tenants is not None else None
        self._in_use = 0
        self._in_use_by_tenant: dict[str, int] = {}
        self._granted_total = 0
        self._rejected_total = 0
        self._rejected_share_total = 0
        self._metrics = metrics = metrics_for(registry)
        if metrics is not None:
            self._m_in_use = metrics.gate_in_use.labels(name)
            self._m_waiting = metrics.gate_waiting.labels(name)
            self._m_wait = metrics.gate_wait.labels(name)
            metrics.gate_capacity.labels(name).set(capacity)

    # -- synchronous state transitions ----------------------------------------------------------

    def _take(self, tenant: str) -> None:
        self._in_use += 1
        self._in_use_by_tenant[tenant] = self._in_use_by_tenant.get(tenant, 0) + 1
        self._granted_total += 1

    def _give_back(self, tenant: str) -> None:
        """Return a slot, and hand it straight to the next waiter if there is one."""
        count = self._in_use_by_tenant.get(tenant, 0)
        if count <= 0:
            raise RuntimeError(f"gate {self.name!r}: release by tenant {tenant!r} that holds no slot")
        if count == 1:
            del self._in_use_by_tenant[tenant]
        else:
            self._in_use_by_tenant[tenant] = count - 1
        self._in_use -= 1
        self._grant_free_slots()

    def share_of(self, tenant: str) -> int:
        """The slots ``tenant`` may hold now (its share of ``capacity``; all of them uncapped)."""
        tenants = self._tenants
        return self.capacity if tenants is None else tenants.share_limit(tenant, self.name, self.capacity)

    def _under_share(self, tenant: str) -> bool:
        return self._in_use_by_tenant.get(tenant, 0) < self.share_of(tenant)

    def _at_share(self, tenant: str) -> bool:
        """Whether ``tenant`` is refused for its share: it holds a share smaller than the gate.
        (A tenant whose share is the whole gate is refused because the gate is full.)"""
        if self._tenants is None:
            return False
        share = self.share_of(tenant)
        return share < self.capacity and self._in_use_by_tenant.get(tenant, 0) >= share

    def _grant_free_slots(self) -> None:
        """Hand free slots to waiters, in queue order (skipping tenants at their share), while both exist."""
        while self._queue and self._in_use < self.capacity:
            waiter = self._queue.pop(self._eligible)
            if waiter is None:
                return  # everyone waiting holds their share already
            waiter.granted = True
            self._take(waiter.tenant)
            waiter.event.set()

    def _reject(self, reason: str, message: str, tenant: str) -> Overloaded:
        self._count_rejection(reason, tenant)
        return Overloaded(message, dependency=self.name, retry_after=self.retry_after)

    def _reject_share(self, message: str, tenant: str) -> TenantShareExceeded:
        self._rejected_share_total += 1
        self._count_rejection("tenant_share", tenant)
        return TenantShareExceeded(
            f"this tenant's share is {self.share_of(tenant)} of the {self.capacity} slots: {message}",
            dependency=self.name,
            retry_after=self.retry_after,
            share=self.share_of(tenant),
            limit=self.capacity,
        )

    def _count_rejection(self, reason: str, tenant: str) -> None:
        self._rejected_total += 1
        if self._metrics is not None:
            self._metrics.rejections.labels(self.name, reason).inc()
        # info, not warning: under overload this fires for every rejected call by design
        _log.info(
            "floodgate.rejected",
            dependency=self.name,
            tenant=tenant,
            reason=reason,
            in_use=self._in_use,
            waiting=len(self._queue),
        )

    def _publish(self) -> None:
        if self._metrics is not None:
            self._m_in_use.set(self._in_use)
            self._m_waiting.set(len(self._queue))

    def _take_free_slot(self, tenant: str) -> bool:
        """Take a slot if one is free, the tenant is under its share, and no waiter could have
        it (a newcomer never overtakes a waiter; one at its share it may)."""
        if self._in_use >= self.capacity:
            return False
        eligible = self._eligible
        if eligible is None:
            if self._queue:
                return False
        elif not eligible(tenant) or (self._queue and self._queue.has_eligible(eligible)):
            return False
        self._take(tenant)
        if self._metrics is not None:
            self._m_in_use.set(self._in_use)
            self._m_wait.observe(0.0)  # zero waits belong in the distribution too
        return True

    # -- public API ------------------------------------------------------------------------------

    def acquire_nowait(self, tenant: str = DEFAULT_TENANT) -> None:
        """Take a slot if one is free and nobody waits; else raise `anyio.WouldBlock`."""
        if not self._take_free_slot(tenant):
            raise anyio.WouldBlock

    async def acquire(self, tenant: str = DEFAULT_TENANT) -> None:
        """Take a slot, waiting (bounded, fairly) if needed. Raises `Overloaded`."""
        if self._take_free_slot(tenant):
            return
        # A caller cancelled already gets its Cancelled, not a rejection the gate did not make.
        await anyio.lowlevel.checkpoint_if_cancelled()
        at_share = self._at_share(tenant)
        if self._tenants is not None:
            places = self._tenants.share_limit(tenant, self.name, self.max_waiters)
            if places < self.max_waiters and self._queue.waiting_of(tenant) >= places:
                raise self._reject_share(
                    f"all held, and its {places} of the {self.max_waiters} waiting places", tenant
                )
        if len(self._queue) >= self.max_waiters or self.max_wait <= 0:
            if at_share:
                raise self._reject_share("all held, and no waiting place", tenant)
            raise self._reject(
                "queue_full", f"all {self.capacity} slots busy and {len(self._queue)} waiting", tenant
            )
        now = anyio.current_time()
        give_up_at = min(now + self.max_wait, anyio.current_effective_deadline() - self.start_margin)
        if give_up_at <= now:
            if at_share:
                raise self._reject_share("all held, and no time left to wait", tenant)
            raise self._reject("deadline", f"all {self.capacity} slots busy and no time left to wait", tenant)
        waiter = _Waiter(tenant, now)
        self._queue.push(waiter)
        self._publish()
        try:
            with anyio.CancelScope(deadline=give_up_at):
                await waiter.event.wait()
        except BaseException:
            # Cancelled from outside. If the grant raced with the cancellation, pass the slot on.
            if waiter.granted:
                self._give_back(tenant)
            else:
                self._queue.remove(waiter)
            self._publish()
            raise
        waited = anyio.current_time() - now
        if self._metrics is not None:
            self._m_wait.observe(waited)
        if waiter.granted:
            self._publish()
            return
        self._queue.remove(waiter)
        self._publish()
        if self._at_share(tenant):
            raise self._reject_share(f"all held for {waited:.3g}s", tenant)
        why = "max_wait" if give_up_at >= now + self.max_wait else "deadline"
        raise self._reject(why, f"no slot free within {waited:.3g}s (capacity {self.capacity})", tenant)

    def release(self, tenant: str = DEFAULT_TENANT) -> None:
        """Give back a slot taken by ``tenant``."""
        had_waiters = bool(self._queue)
        self._give_back(tenant)
        if had_waiters:
            self._publish()
        elif self._metrics is not None:
            self._m_in_use.set(self._in_use)

    def resize(self, capacity: int) -> None:
        """Set a new ``capacity`` in place; calls in flight are never dropped.

        Raising it hands the new slots to waiters at once (fair order, as on release). Lowering
        it takes no slot back: holders finish, and no one new gets a slot until ``in_use`` is
        under the new capacity, so ``in_use`` may exceed ``capacity`` until enough calls end
        (`statistics` shows both). 0 is allowed: the gate then admits no one (callers wait, as
        bounded as ever, then get `Overloaded`) — a process that holds no share yet.
        """
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        if capacity == self.capacity:
            return
        self.capacity = capacity
        if self._metrics is not None:
            self._metrics.gate_capacity.labels(self.name).set(capacity)
        had_waiters = bool(self._queue)
        self._grant_free_slots()
        if had_waiters:
            self._publish()

    def slot(self, tenant: str = DEFAULT_TENANT) -> _Slot:
        """``async with gate.slot(tenant=...):`` holds a slot for the block."""
        return _Slot(self, tenant)

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now (cheap: for probes read on every request)."""
        return len(self._queue)

    @property
    def waiting_for_capacity(self) -> int:
        """Callers waiting because the gate is full, not because their tenant holds its share: the
        queue a larger gate would shorten (an admission door reads it as its bottleneck's queue, so
        a tenant queueing behind its own share does not shrink the door for everyone). A tenant
        whose share is the whole gate waits for capacity even when it holds every slot (the same
        test as a refusal's, `_at_share`). Without shares, `waiting`."""
        if self._tenants is None:
            return len(self._queue)
        return self._queue.waiting_unless(self._at_share)

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            name=self.name,
            capacity=self.capacity,
            in_use=self._in_use,
            waiting=len(self._queue),
            max_waiters=self.max_waiters,
            max_wait=self.max_wait,
            in_use_by_tenant=MappingProxyType(dict(self._in_use_by_tenant)),
            waiting_by_tenant=MappingProxyType(self._queue.by_tenant()),
            granted_total=self._granted_total,
            rejected_total=self._rejected_total,
            rejected_share_total=self._rejected_share_total,
        )

    def __repr__(self) -> str:
        return (
            f"<Gate {self.name!r} in_use={self._in_use}/{self.capacity} "
            f"waiting={len(self._queue)}/{self.max_waiters} max_wait={self.max_wait}>"
        )


class _Slot:
    __slots__ = ("_gate", "_tenant")

    def __init__(self, gate: Gate, tenant: str):
        self._gate = gate
        self._tenant = tenant

    async def __aenter__(self) -> None:
        await self._gate.acquire(self._tenant)

    async def __aexit__(self, *exc_info: object) -> None:
        self._gate.release(self._tenant)
