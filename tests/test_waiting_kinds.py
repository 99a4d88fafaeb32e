"""The scheduler remembers, per job kind, why one waiting job found nothing and tells the next of that
kind the same without trying it again (what keeps a round's time flat as a queue of alike jobs grows).
That must change no decision and no explanation: random scenarios in which every job comes three times
(same kind, other ids) replay to the same event log and the same reasons with the memo and without."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, note, settings
from strategies import Scenario, scenarios

from corral.scheduling import POLICIES
from corral.scheduling.scheduler import _Round
from corral.sim.engine import Simulator


def replay(scenario: Scenario, policy: str) -> tuple[list[dict[str, object]], dict[str, str]]:
    events = []
    result = Simulator(
        scenario.cluster_file,
        scenario.workloads,
        POLICIES[policy],
        cluster_events=scenario.cluster_events,
        sink=lambda event: events.append(event.to_json_dict()),
    ).run()
    return events, {job: pending.message for job, pending in result.pending.items()}


def tripled(scenario: Scenario) -> Scenario:
    copies = [job.model_copy(update={"id": f"{job.id}-{n}"}) for job in scenario.workloads for n in (2, 3)]
    return Scenario(scenario.cluster_file, [*scenario.workloads, *copies], scenario.cluster_events)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(max_jobs=12, churn=True))
def test_remembering_waiting_kinds_changes_no_decision_and_no_reason(policy: str, scenario: Scenario) -> None:
    alike = tripled(scenario)
    note(f"scenario: {alike.describe()}")
    remembered = replay(alike, policy)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Round, "_repeatable", lambda *args: False)
        tried = replay(alike, policy)
    assert remembered == tried
