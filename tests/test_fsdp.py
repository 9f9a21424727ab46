"""Fully sharded parameters (`fsdp`): over 4 forced host devices, training with the fixed, frozen and
trainable parameters and the optimizer state sharded equals replicated training, a device holds a
fraction of their bytes, and the export gathers the shards.

The training is the 1-process run of test_distributed.py (`shared_runs`, once per session), which trains
the same steps replicated and with fsdp.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_distributed import FSDP_STEPS, TOL, shared_runs

from human3r_jax.train.trainer import param_spec


@pytest.fixture(scope="module")
def runs(smplx_root, tmp_path_factory):
    return shared_runs(tmp_path_factory, smplx_root)


def test_param_spec_shards_the_largest_divisible_dimension():
    from jax.sharding import PartitionSpec as P

    assert param_spec((8, 6), 4) == P("data")
    assert param_spec((6, 12), 4) == P(None, "data")
    assert param_spec((4, 3, 4), 4) == P("data")  # a tie: the first
    assert param_spec((3, 5), 4) == P()  # nothing divisible: replicated
    assert param_spec((2,), 4) == P()  # smaller than the device count
    assert param_spec((), 4) == P()
    assert param_spec((8, 6), 1) == P()


def test_fsdp_training_equals_replicated_training(runs):
    out = runs["single"]
    for step in range(1, FSDP_STEPS + 1):
        assert abs(out[f"fsdp/loss{step}"] - out[f"single/loss{step}"]) <= TOL, step
    keys = [k.split("/", 1)[1] for k in out if k.startswith(f"single{FSDP_STEPS}/.")]
    assert any("opt_state" in k for k in keys) and any("fixed_grads" in k for k in keys)
    for k in keys:
        want = out[f"single{FSDP_STEPS}/{k}"]
        np.testing.assert_allclose(out[f"fsdp{FSDP_STEPS}/{k}"], want, rtol=0, atol=TOL, err_msg=k)


def test_fsdp_holds_a_fraction_of_the_bytes_per_device(runs):
    replicated, fsdp = runs["sizes"]["single"], runs["sizes"]["fsdp"]
    print(f"bytes on device 0 of 4: replicated {replicated}, fsdp {fsdp}")
    assert replicated["sharded_arrays"] == 0 and fsdp["sharded_arrays"] > 0
    # most arrays have a dimension that 4 divides: about a quarter, plus the replicated rest
    for group in ("params", "optimizer"):
        assert replicated[group] / 4 <= fsdp[group] < 0.3 * replicated[group], (group, replicated, fsdp)


def test_export_gathers_the_sharded_weights(runs):
    out = runs["single"]
    exported = [k for k in out if k.startswith("exported/human.decpose.")]
    assert exported
    for k in exported:
        path = "".join(f"['{p}']" for p in k.split("/", 1)[1].split("."))
        np.testing.assert_array_equal(out[k], out[f"fsdp{FSDP_STEPS}/.trainable{path}"], err_msg=k)
