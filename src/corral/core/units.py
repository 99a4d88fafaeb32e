"""Units shared by the whole domain.

GPU quantities are integers of milli-GPU everywhere inside corral (1000 = one whole GPU), so quota and
capacity arithmetic is exact; specs state GPUs as floats and are converted once, here.
"""

MILLI_PER_GPU = 1000


def gpus_to_milli(gpus: float) -> int:
    """Convert a GPU count from a spec (may be fractional) to exact milli-GPU."""
    return round(gpus * MILLI_PER_GPU)


def milli_to_gpus(milli: int) -> float:
    return milli / MILLI_PER_GPU


def spoken_span(seconds: float) -> str:
    """A wait as people say it: 40 s, 25 min, 3.5 h."""
    if seconds < 120:
        return f"{max(seconds, 0.0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
