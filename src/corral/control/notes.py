"""What a round writes on its waiting jobs: why each waits and its forecast, only where that changed.

Every round explains every waiting job (the explanation a user reads must be the final state of the
round it comes from), but with 10,000 jobs waiting almost all are told what they were told last round.
The loop keeps each job's last written note (``ActiveJob.reason``, ``forecast_start``,
``burst_cost_usd``), so the round writes only the differences. Finding them is a pass over every
waiting job; it is made of C-level iterators (``map``, ``zip``, ``compress``) rather than a Python
loop, which was most of recording a deep queue's round. Alike jobs share one explanation object
(``SchedulingResult.pending``), so each distinct sentence is built once.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import attrgetter, ne

from corral.control.active import ActiveJob, ActiveJobs, WaitingNote
from corral.scheduling import Pending, Snapshot
from corral.scheduling.bursting import burst_cost


def changed_notes(
    pending: Mapping[str, Pending], jobs: Mapping[str, ActiveJob], kept: ActiveJobs, snapshot: Snapshot
) -> dict[str, WaitingNote]:
    """The notes of ``pending``'s jobs that differ from what the store holds for them: ``kept``'s
    reasons, or for a job of ``jobs`` (the round's view) with a forecast, its row's three fields.

    A job with a forecast start of its own gets that start and what bursting would cost; every other
    waiting job gets its explanation and neither (what an earlier forecast wrote is cleared). A job the
    round requeued is not waiting in ``kept`` (its reason there is None), so it is always written."""
    forecast = snapshot.forecast
    private_start = forecast.private_start if forecast is not None else {}
    ids = pending.keys()
    explanations = pending.values()
    identities = list(map(id, explanations))
    distinct = dict(zip(identities, explanations, strict=True))  # alike jobs share one explanation
    sentence = {key: explanation.message for key, explanation in distinct.items()}
    differ = map(ne, map(kept.reasons.get, ids), map(sentence.__getitem__, identities))
    notes = {
        job_id: WaitingNote(sentence[key], None, None)
        for job_id, key in compress(zip(ids, identities, strict=True), differ)
    }
    own = private_start.keys() | kept.forecasted  # the jobs a forecast covers, or covered: a few hundred
    for job_id in sorted(job_id for job_id in own if job_id in pending):
        job = jobs[job_id]
        start = private_start.get(job_id)
        cost = None
        if start is not None and not job.workload.must_stay_private:
            cost = burst_cost(job.workload, forecast, snapshot.cheapest_public_gpu_hour(job.workload))
        note = WaitingNote(sentence[id(pending[job_id])], start, cost)
        if (note.reason, note.forecast_start, note.burst_cost_usd) != _NOTE_OF(job):
            notes[job_id] = note
        else:
            notes.pop(job_id, None)
    return notes


_NOTE_OF = attrgetter("reason", "forecast_start", "burst_cost_usd")
"""A job's note as the store holds it."""
