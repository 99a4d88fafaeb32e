"""A training loop that checkpoints after every step and, when it runs again after a preemption,
resumes from its last checkpoint instead of step 0."""

import os
import time
from pathlib import Path

STEPS = 12
checkpoint = Path(os.environ["CORRAL_CHECKPOINT_DIR"]) / f"pod-{os.environ['CORRAL_POD_INDEX']}.step"
start = int(checkpoint.read_text()) if checkpoint.exists() else 0
attempt = os.environ["CORRAL_ATTEMPT"]
print(f"attempt {attempt}: " + (f"resumed from step {start}" if start else "starting at step 0"))
for step in range(start, STEPS):
    time.sleep(0.5)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(str(step + 1))
print(f"attempt {attempt}: finished {STEPS} steps ({STEPS - start} in this attempt)")
