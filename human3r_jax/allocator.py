"""Host allocator policy for XLA:CPU: keep freed memory in the process instead of returning it to the kernel.

XLA:CPU allocates every output and temporary buffer of a step afresh. glibc serves blocks above its mmap
threshold (and every block a worker thread's arena cannot hold) with a new mmap and unmaps them on free, so each
step faults in all its large buffers again, page by page: a ReLU over a [1, 288, 512, 128] map takes 20 ms that
way and 6 ms from memory already mapped (2-core CPU). With one arena, no mmap and a high trim threshold, freed
blocks are reused from the heap: 4 % of a CUT3R 512 frame, 20 % of a DPT head. The heap keeps a few freed
buffers more than it needs; RSS levels off (4.02 GB from the 4th frame on in a 21-frame CUT3R 512 loop; peak
4.14 GB against 4.24 GB with glibc's defaults in bench/bench.py).

    retain_freed_memory()   # before the first JAX computation; the CLI and the benchmarks call it

HUMAN3R_JAX_MALLOC=system keeps glibc's defaults (unset or `retain`: this policy; any other value is refused).
Other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import platform

from human3r_jax.errors import Human3rError

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 2**31 - 1  # the largest an int holds: freed memory stays up to 2 GiB above the heap top


def retain_freed_memory() -> bool:
    """Set glibc's malloc to one arena, no mmap and a 2 GiB trim threshold; True if it took effect.

    Threads started before the call keep the arena they have, hence "before the first JAX computation"."""
    choice = os.environ.get("HUMAN3R_JAX_MALLOC", "retain") or "retain"
    if choice not in ("retain", "system"):
        raise Human3rError(
            f"HUMAN3R_JAX_MALLOC={choice!r}: expected 'system' (glibc's defaults) or 'retain' (or unset)"
        )
    if choice == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(p, v) == 1 for p, v in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
