"""bench/bench_bf16.py's comparison on the cut3r_tiny fixture: the bfloat16 run really differs from float32,
by a bounded amount, and our float32 run matches the official outputs (the parity noise floor).

Bounds, 6-20x above what was measured (in brackets): bf16 vs float32 relative L2 of the self-view points
≤ 2e-2 (1.6e-3), their p99 error ≤ 0.1 of the median depth (6.6e-3), world points median error ≤ 0.3 of it
(4.7e-2), self confidence relative L2 ≤ 1e-3 (5.1e-5), camera rotation ≤ 10° (1.5°), translation ≤ 0.2 of
the trajectory extent (1.8e-2). Floor: relative L2 ≤ 1e-4 (parity's tolerance).
Self-view heads only (all_heads=False): it compiles twice (float32 and bfloat16), ~20 s.
"""

import importlib.util
import math
import sys

import jax
import pytest
from conftest import ROOT, shared_path


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "bench"))  # its sibling modules (options)
    spec = importlib.util.spec_from_file_location("bench_bf16", ROOT / "bench" / "bench_bf16.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # ~20 s: two compilations of the tiny model
def test_bf16_errors_on_cut3r_tiny(bench):
    # flax's LayerNorm mixes bf16 with its float32 statistics implicitly: standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        res = bench.compare_fixture(shared_path("fixtures", "cut3r_tiny"), all_heads=False)
    bf16, floor = res["bf16_vs_f32"], res["f32_vs_official"]
    measured = {
        ("pts3d_in_self_view", "rel_l2"): 2e-2,
        ("pts3d_in_self_view", "p99"): 0.1,
        ("pts3d_world", "median"): 0.3,
        ("conf_self", "rel_l2"): 1e-3,
        ("camera", "rotation_deg"): 10.0,
        ("camera", "translation"): 0.2,
    }
    for (what, key), bound in measured.items():
        value = bf16[what][key]
        assert math.isfinite(value) and 0 < value < bound, (what, key, value)
    for what in ("pts3d_in_self_view", "pts3d_world", "conf_self"):
        assert floor[what]["rel_l2"] <= 1e-4, (what, floor[what])
    # the noise floor is far below the bf16 error: the comparison measures bf16, not the harness
    assert floor["pts3d_in_self_view"]["rel_l2"] < bf16["pts3d_in_self_view"]["rel_l2"] / 100
    assert "pts3d_in_other_view" not in bf16 and "humans" not in bf16


def test_table_shows_bf16_and_floor(bench):
    res = {"m": {"bf16_vs_f32": {"conf_self": {"rel_l2": 2e-3}}, "f32_vs_official": {"conf_self": {"rel_l2": 3e-8}}}}
    lines = bench.table(res).splitlines()
    assert lines[0] == "| output | m |"
    assert lines[2] == "| self confidence: rel L2 | 2.0e-03 (3.0e-08) |"
    assert len(lines) == 3  # rows without a value anywhere are left out


def test_people_are_matched_by_head_location(bench):
    import numpy as np

    ref = {"valid": np.array([[True, True, False]]), "smpl_loc": np.array([[[10.0, 10], [50, 50], [0, 0]]])}
    a = {"valid": np.array([[True, False, True]]), "smpl_loc": np.array([[[51.0, 49], [0, 0], [90, 90]]])}
    assert bench.match_people(a, ref, radius=14) == [(0, 0, 1)]


def test_geodesic_angle_of_a_known_rotation(bench):
    import numpy as np

    t = np.deg2rad([1e-4, 3.0, 170.0])
    rz = np.zeros((3, 3, 3))
    rz[:, 0, 0] = rz[:, 1, 1] = np.cos(t)
    rz[:, 0, 1], rz[:, 1, 0], rz[:, 2, 2] = -np.sin(t), np.sin(t), 1
    np.testing.assert_allclose(bench.geodesic_deg(rz, np.eye(3)), [1e-4, 3.0, 170.0], rtol=1e-9)
