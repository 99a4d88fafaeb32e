"""How many replicas a service needs: Knative's pod autoscaler (KPA), as pure functions of time.

The gateway measures each service's concurrency (requests in flight, averaged over time) and the
controller hands the samples here with the clock's ``now``; nothing here reads a clock or does I/O, so the
tests drive it with a fake one. The rules are Knative's:

- **stable mode**: replicas = ceil(average concurrency over the stable window / target);
- **panic mode**: when the panic window's average needs ``panic_threshold`` times the replicas that are
  ready, scale to it at once and never down while panicking; panic ends once a whole stable window has
  passed without the condition;
- **scale to zero** only after no request for ``idle_before_zero`` seconds (stable window + 30 s grace);
- **activation**: a request held while no replica is ready asks for one at once, whatever the windows say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral.spec.service import Autoscaling, Replicas


@dataclass(frozen=True)
class Sample:
    """Average requests in flight over ``[t - period, t]``, as the gateway measured it."""

    t: float
    concurrency: float


@dataclass(frozen=True)
class ScalerState:
    """What the KPA remembers between decisions."""

    panic_until: float | None = None
    """While panicking: when panic ends if its condition does not hold again."""
    panic_replicas: int = 0
    """The most replicas asked for in this panic: panic never scales down."""
    last_busy: float | None = None
    """The last time a request was in flight or held (None: never)."""


@dataclass(frozen=True)
class Decision:
    replicas: int
    state: ScalerState
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float


def replicas_for(concurrency: float, target: float) -> int:
    """Replicas that hold ``concurrency`` requests in flight at ``target`` each."""
    return math.ceil(concurrency / target - 1e-9) if concurrency > 0 else 0


def window_average(samples: Sequence[Sample], now: float, window: float) -> float:
    """Mean concurrency of the samples in ``(now - window, now]``; 0 without any."""
    inside = [s.concurrency for s in samples if now - window < s.t <= now]
    return sum(inside) / len(inside) if inside else 0.0


def decide(
    samples: Sequence[Sample],
    now: float,
    *,
    ready: int,
    current: int,
    held: int,
    config: Autoscaling,
    bounds: Replicas,
    state: ScalerState,
) -> Decision:
    """Replicas the service should have at ``now``.

    ``ready``: replicas serving; ``current``: replicas that exist (ready or starting); ``held``: requests
    waiting for a replica right now."""
    stable = window_average(samples, now, config.stable_window)
    panic = window_average(samples, now, config.panic_window)
    want_stable = replicas_for(stable, config.target_concurrency)
    want_panic = replicas_for(panic, config.target_concurrency)
    busy = [s.t for s in samples if s.concurrency > 0] + ([now] if held else [])
    last_busy = max([*busy, state.last_busy or -math.inf]) if busy else state.last_busy

    panic_until = state.panic_until
    if want_panic >= config.panic_threshold * max(ready, 1) and want_panic > ready:
        panic_until = now + config.stable_window
    panicking = panic_until is not None and now < panic_until
    if panicking:
        wanted = max(want_panic, state.panic_replicas if state.panic_until is not None else 0, current)
        next_state = ScalerState(panic_until, wanted, last_busy)
    else:
        wanted = want_stable
        next_state = ScalerState(None, 0, last_busy)

    if wanted == 0 and current > 0 and last_busy is not None and now - last_busy < config.idle_before_zero:
        wanted = 1  # the grace before zero: keep one warm
    if held > 0:
        wanted = max(wanted, 1)  # activation: a held request needs a replica now
    replicas = min(max(wanted, bounds.min), bounds.max)
    return Decision(replicas, next_state, panicking, stable, panic)
