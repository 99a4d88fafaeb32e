"""Quota admission: nominal quota per queue and flavor, borrowing idle quota inside a cohort.

A queue may always use its nominal quota. Beyond it, it borrows: up to its borrowing limit, and only while
the cohort as a whole stays within the sum of its members' nominal quotas. That second rule is the same as
"what a queue borrows never exceeds what the other members leave idle", stated so it is one comparison.
When a queue wants its own nominal quota back, the borrowers are preempted (see ``preemption``).
"""

from __future__ import annotations

from corral.core.units import milli_to_gpus
from corral.scheduling.snapshot import Snapshot


def quota_shortfall(snapshot: Snapshot, queue: str, flavor: str, demand_milli: int) -> str | None:
    """Why ``demand_milli`` more GPU in ``flavor`` would break ``queue``'s quota now, or None if it fits."""
    if snapshot.queues is None or demand_milli == 0:
        return None
    spec = snapshot.queues[queue]
    if spec.unlimited:
        return None
    used = snapshot.queue_gpu[(queue, flavor)]
    nominal = spec.nominal_milli(flavor)
    need = used + demand_milli
    if not spec.cohort:
        if need <= nominal:
            return None
        return (
            f"queue {queue}: {flavor} quota {_gpus(nominal)} GPUs, {_gpus(used)} in use, job needs {_gpus(demand_milli)} "
            f"(no cohort to borrow from)"
        )
    limit = spec.borrow_limit_milli(flavor)
    if limit is not None and need > nominal + limit:
        return (
            f"queue {queue}: {flavor} quota {_gpus(nominal)} + borrowing limit {_gpus(limit)} GPUs, "
            f"{_gpus(used)} in use, job needs {_gpus(demand_milli)}"
        )
    cohort_used = snapshot.cohort_gpu[(spec.cohort, flavor)]
    cohort_nominal = snapshot.cohort_nominal[(spec.cohort, flavor)]
    if cohort_used + demand_milli <= cohort_nominal:
        return None
    idle = max(0, cohort_nominal - cohort_used)
    if need <= nominal:
        return (
            f"queue {queue}: within its {flavor} quota ({_gpus(need)} of {_gpus(nominal)} GPUs) but cohort "
            f"{spec.cohort} has lent it out ({_gpus(idle)} idle); reclaim needs preemption of borrowers"
        )
    return (
        f"queue {queue}: {flavor} quota {_gpus(nominal)} GPUs, {_gpus(used)} in use, job needs {_gpus(demand_milli)}; "
        f"cohort {spec.cohort} has {_gpus(idle)} of {_gpus(cohort_nominal)} GPUs idle to lend"
    )


def only_limit_refuses(snapshot: Snapshot, queue: str, flavor: str, demand_milli: int) -> bool:
    """True when ``queue``'s borrowing limit alone keeps ``demand_milli`` more of ``flavor`` from it: the
    cohort has that much idle quota to lend, and the queue may borrow only less."""
    if snapshot.queues is None or demand_milli == 0:
        return False
    spec = snapshot.queues[queue]
    limit = spec.borrow_limit_milli(flavor)
    if spec.unlimited or not spec.cohort or limit is None:
        return False
    used = snapshot.queue_gpu[(queue, flavor)]
    over_limit = used + demand_milli > spec.nominal_milli(flavor) + limit
    cohort_room = (
        snapshot.cohort_gpu[(spec.cohort, flavor)] + demand_milli
        <= snapshot.cohort_nominal[(spec.cohort, flavor)]
    )
    return over_limit and cohort_room


def max_admissible_milli(snapshot: Snapshot, queue: str, flavor: str) -> int | None:
    """The most GPU in ``flavor`` the queue could ever hold (all others idle); None = unlimited."""
    if snapshot.queues is None:
        return None
    spec = snapshot.queues[queue]
    if spec.unlimited:
        return None
    nominal = spec.nominal_milli(flavor)
    if not spec.cohort:
        return nominal
    ceiling = snapshot.cohort_nominal[(spec.cohort, flavor)]
    limit = spec.borrow_limit_milli(flavor)
    if limit is not None:
        ceiling = min(ceiling, nominal + limit)
    return max(ceiling, nominal)


def is_borrowing(snapshot: Snapshot, queue: str, flavor: str) -> bool:
    """True when ``queue`` holds more of ``flavor`` than its nominal quota (so lent quota can be reclaimed)."""
    if snapshot.queues is None or queue not in snapshot.queues:
        return False
    spec = snapshot.queues[queue]
    return not spec.unlimited and snapshot.queue_gpu[(queue, flavor)] > spec.nominal_milli(flavor)


def _gpus(milli: int) -> str:
    gpus = milli_to_gpus(milli)
    return f"{gpus:g}"
