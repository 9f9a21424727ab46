"""The CLI's allocator policy (human3r_jax/allocator.py): a step's freed buffers are reused, not mapped anew."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")

# A jitted op writing a fresh 64 MiB buffer per call, 8 calls after a warm-up: how many of them fault in (almost) no
# page, and the fewest pages one of them faulted in.
PROBE = """
import resource
from human3r_jax.allocator import retain_freed_memory
took = retain_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((16, 1024, 1024), jnp.float32)
f = jax.jit(lambda x: x * 2)
for _ in range(16):  # the heap grows while the first results are still being freed
    f(x).block_until_ready()
faults = []
for _ in range(8):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(took, sum(n < 100 for n in faults), min(faults))
"""


def reuse(policy: str | None) -> tuple[bool, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "HUMAN3R_JAX_MALLOC"}
    if policy:
        env["HUMAN3R_JAX_MALLOC"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    took, clean, fewest = out.stdout.split()
    return took == "True", int(clean), int(fewest)


def test_retained_memory_is_not_faulted_in_again_and_the_opt_out_keeps_glibc_defaults():
    took, clean, _ = reuse(None)
    took_system, clean_system, fewest_system = reuse("system")
    assert took and not took_system
    if fewest_system < 1000:  # huge pages, or a kernel that does not fault 64 MiB in page by page
        pytest.skip(f"glibc's defaults fault in only {fewest_system} pages per call here: nothing to compare")
    assert clean_system == 0
    assert clean >= 4, f"only {clean} of 8 calls reused freed memory"


def test_an_unknown_policy_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "HUMAN3R_JAX_MALLOC": "sytem"}
    cmd = [sys.executable, "-m", "human3r_jax.cli", "parity", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "human3r-jax parity: error: HUMAN3R_JAX_MALLOC='sytem': expected 'system' (glibc's defaults) or 'retain' "
        "(or unset)"
    ]
