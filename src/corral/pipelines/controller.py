"""The pipeline controller: moves every running pipeline run on, from what the store says.

It runs in the reconcile loop, before each round's decisions (after the backends recorded which jobs
ended), so a step whose needs just succeeded has its job submitted in time for the same round to
schedule it: a pipeline moves at the speed of job exits, not of a polling tick. Step jobs are ordinary
jobs in the run's tenant and the step's queue, so quotas, gangs and GPUs are the one scheduler's to
decide; the controller only decides *whether* a step runs at all (the cache) and *when* it is submitted.

It keeps nothing between calls: each call reads the runs, steps and jobs it needs, and each change is a
conditional write of one step, so a restart (even ``kill -9``) goes on where the store says, a cancel
through the API is never undone, and a step's job is submitted with an idempotency key made of the run
and the step, so a crash between submitting it and recording it cannot run it twice.
"""

from __future__ import annotations

import logging
from contextlib import suppress

from corral.pipelines.cache import cache_key, key_parts, miss_reason
from corral.pipelines.plan import StepInstance, expand, step_job, used_params
from corral.spec.job import Mount
from corral.spec.pipeline import PipelineSpec
from corral.store.code import CodeStore
from corral.store.jobs import JobAlreadyEnded, JobNotFound, JobStore
from corral.store.pipelines import ACTIVE_STEPS, PipelineStore, RunRecord, StepRecord

log = logging.getLogger(__name__)

STOPPED = ("failed", "upstream_failed", "cancelled")


class PipelineController:
    def __init__(self, pipelines: PipelineStore, jobs: JobStore, archives: CodeStore | None) -> None:
        """``archives``: where outputs are kept (a cache hit needs its outputs to still be there)."""
        self.pipelines = pipelines
        self.jobs = jobs
        self.archives = archives

    def advance(self) -> None:
        """Move every running run on as far as it can go now; one run's trouble never stops the rest."""
        for run in self.pipelines.running():
            try:
                self._advance(run)
            except Exception:
                log.exception("pipeline run %s could not be advanced; trying again next round", run.id)

    def _advance(self, run: RunRecord) -> None:
        spec = PipelineSpec.model_validate(run.spec)
        instances = expand(spec)
        steps = {step.name: step for step in self.pipelines.steps(run.id)}
        moved = True
        while moved:  # a cache hit makes the steps after it ready at once
            moved = False
            for instance in instances:
                if self._step(run, spec, instances, instance, steps):
                    steps[instance.name] = self._reread(run.id, instance.name)
                    moved = True
        if all(step.status not in ACTIVE_STEPS for step in steps.values()):
            failed = [step for step in steps.values() if step.status in ("failed", "cancelled")]
            if failed:
                self.pipelines.end(run.id, "failed", f"step {failed[0].name} failed: {failed[0].reason}")
            else:
                self.pipelines.end(run.id, "succeeded", None)

    def _reread(self, run_id: str, name: str) -> StepRecord:
        return next(step for step in self.pipelines.steps(run_id) if step.name == name)

    def _step(
        self,
        run: RunRecord,
        spec: PipelineSpec,
        instances: list[StepInstance],
        instance: StepInstance,
        steps: dict[str, StepRecord],
    ) -> bool:
        """Move one step on if it can; True when it changed."""
        step = steps[instance.name]
        if step.status == "submitted":
            return self._job_ended(spec, step)
        if step.status != "waiting":
            return False
        stopped = [need for need in instance.needs if steps[need].status in STOPPED]
        if stopped:
            reason = f"{stopped[0]} did not succeed ({steps[stopped[0]].status})"
            return self.pipelines.update_step(
                run.id, step.name, "waiting", status="upstream_failed", reason=reason
            )
        if any(steps[need].status != "succeeded" for need in instance.needs):
            return False
        return self._start(run, spec, instances, instance, steps)

    def _job_ended(self, spec: PipelineSpec, step: StepRecord) -> bool:
        """A submitted step whose job ended: succeeded with its outputs, or failed with why."""
        try:
            job = self.jobs.get(step.job_id or "")
        except JobNotFound:
            return self.pipelines.update_step(
                step.run_id, step.name, "submitted", status="failed", reason=f"its job {step.job_id} is gone"
            )
        if job.status in ("pending", "running"):
            return False
        if job.status != "finished":
            reason = f"job {job.id} {job.status}: {job.reason or 'no reason given'}"
            return self.pipelines.update_step(
                step.run_id, step.name, "submitted", status="failed", reason=reason
            )
        declared = spec.steps[step.step].outputs
        stored = self.pipelines.outputs(job.id)
        missing = [name for name in declared if name not in stored]
        if missing:
            names = ", ".join(f"{name} ({declared[name]})" for name in missing)
            reason = f"declared output {names} was not stored: see `corral logs {job.id}`"
            return self.pipelines.update_step(
                step.run_id, step.name, "submitted", status="failed", reason=reason
            )
        outputs = {name: stored[name] for name in declared}
        return self.pipelines.update_step(
            step.run_id, step.name, "submitted", status="succeeded", outputs=outputs
        )

    def _start(
        self,
        run: RunRecord,
        spec: PipelineSpec,
        instances: list[StepInstance],
        instance: StepInstance,
        steps: dict[str, StepRecord],
    ) -> bool:
        """A step whose needs all succeeded: reuse an earlier run's outputs (a cache hit), or submit its job."""
        step_spec = spec.steps[instance.step]
        mounts: list[Mount] = []
        inputs: dict[str, str] = {}
        for input_name, wanted in step_spec.inputs.items():
            for producer in (i for i in instances if i.step == wanted.from_):
                digest = (steps[producer.name].outputs or {})[wanted.output]
                path = "/".join(part for part in (wanted.path, producer.label) if part) or "."
                mounts.append(Mount(digest=digest, path=path))
                inputs[f"{input_name} from {producer.name}"] = digest
        params = {name: run.params[name] for name in used_params(step_spec)}
        parts = key_parts(step_spec, params, dict(instance.matrix), inputs)
        key = cache_key(parts)
        keyed = {"cache_key": key, "key_parts": parts}
        if step_spec.cache:
            hit = self.pipelines.cache_hit(run.tenant, key)
            if hit is not None and self._kept(run.tenant, hit.outputs or {}):
                why = f"cache hit: outputs of {hit.name} in run {hit.run_id}"
                values = {"status": "succeeded", "cached": True, "job_id": hit.job_id, "outputs": hit.outputs}
                return self.pipelines.update_step(
                    run.id, instance.name, "waiting", cache_reason=why, **values, **keyed
                )
            previous = self.pipelines.previous(run.tenant, run.name, run.id, instance.step, instance.name)
            why = (
                miss_reason(
                    parts, previous.key_parts if previous else None, previous.run_id if previous else None
                )
                if hit is None
                else f"cache miss: the outputs of {hit.name} in run {hit.run_id} are no longer stored"
            )
        else:
            why = "cache: false (runs every time)"
        job_spec = step_job(spec, instance, run.params, run.id, mounts)
        job = self.jobs.submit(job_spec, tenant=run.tenant, submit_key=f"pipeline/{run.id}/{instance.name}")
        if self.pipelines.update_step(
            run.id, instance.name, "waiting", status="submitted", job_id=job.id, cache_reason=why, **keyed
        ):
            return True
        with suppress(JobAlreadyEnded):  # the run was cancelled meanwhile: its job must not run
            self.jobs.cancel(job.id, reason=f"pipeline run {run.id} was cancelled")
        return False

    def _kept(self, tenant: str, outputs: dict[str, str]) -> bool:
        """Whether every output of a cache hit is still in the tenant's archives (which make room by
        removing the least recently used: a hit counts as a use)."""
        if self.archives is None:
            return True
        if not all(self.archives.has(tenant, digest) for digest in outputs.values()):
            return False
        for digest in outputs.values():
            self.archives.use(tenant, digest)
        return True


def cancel_run(pipelines: PipelineStore, jobs: JobStore, run_id: str, reason: str) -> bool:
    """Stop a run: its running steps' jobs are cancelled and the steps not started never are. False
    when it had already ended. A step the controller submits meanwhile is seen on the second look."""
    if not pipelines.end(run_id, "cancelled", reason):
        return False
    for _ in range(2):
        for step in pipelines.steps(run_id):
            if step.status == "waiting":
                pipelines.update_step(run_id, step.name, "waiting", status="cancelled", reason=reason)
            elif step.status == "submitted" and pipelines.update_step(
                run_id, step.name, "submitted", status="cancelled", reason=reason
            ):
                with suppress(JobAlreadyEnded, JobNotFound):
                    jobs.cancel(step.job_id or "", reason=reason)
    return True
