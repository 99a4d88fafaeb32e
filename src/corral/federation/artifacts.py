"""Which of a job's artifacts may be copied to which cluster's object store.

Data of a sensitive job never leaves owned hardware, and of other jobs only what a public cluster needs to
serve or resume the work (trained models and checkpoints) may go there; datasets and logs can hold the
very data the privacy rule protects. The rule is pure so that the server, the CLI and the tests agree on
it without an object store at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from corral.errors import CorralError

ArtifactKind = Literal["model", "checkpoint", "dataset", "log", "other"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = get_args(ArtifactKind)
PUBLIC_KINDS: frozenset[ArtifactKind] = frozenset({"model", "checkpoint"})
"""The only kinds that may be copied to a public cluster, and only for jobs that are not sensitive."""


@dataclass(frozen=True)
class ArtifactCopy:
    """A proposed copy: ``artifact`` (its name, e.g. a path in the job's folder) of ``job`` to
    ``cluster``'s object store."""

    job: str
    sensitive: bool
    artifact: str
    kind: ArtifactKind
    cluster: str
    private: bool


class ArtifactRefused(CorralError):
    """The rule forbids a copy; the message names the job, the artifact, the cluster and what may go."""

    def __init__(self, copy: ArtifactCopy, reason: str) -> None:
        super().__init__(reason)
        self.copy = copy


def check_copy(copy: ArtifactCopy) -> None:
    """Raise ``ArtifactRefused`` unless ``copy`` is allowed: anything to a private cluster; to a public
    cluster only models and checkpoints of jobs that are not sensitive."""
    if copy.private:
        return
    if copy.sensitive:
        raise ArtifactRefused(
            copy,
            f"job {copy.job} is sensitive: its artifacts never leave private clusters "
            f"({copy.artifact!r} to public cluster {copy.cluster!r} refused)",
        )
    if copy.kind not in PUBLIC_KINDS:
        raise ArtifactRefused(
            copy,
            f"only models and checkpoints may be copied to public cluster {copy.cluster!r}; "
            f"{copy.artifact!r} of job {copy.job} is marked {copy.kind}",
        )
