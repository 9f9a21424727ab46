"""Camera-pose metrics (human3r_jax.evaluation.pose): hand cases, GT readers, evo's Sim(3) against a NumPy Umeyama,
and a comparison with the official Human3R ``eval/relpose`` functions that runs only when HUMAN3R_OFFICIAL_HUMAN3R
points to a Human3R checkout (or an extracted ``eval/relpose`` tree)."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types

import numpy as np
import pytest

pytest.importorskip("evo")
from scipy.spatial.transform import Rotation

from human3r_jax.evaluation import pose as P

OFFICIAL = os.environ.get("HUMAN3R_OFFICIAL_HUMAN3R")


def _random_c2w(n, seed, step=0.3):
    """Random-walk camera-to-world [n, 4, 4] with random rotations."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    c2w[:, :3, 3] = np.cumsum(rng.normal(scale=step, size=(n, 3)), axis=0)
    return c2w


def _sim3(c2w, s, R, t):
    """Apply the world map x ↦ s·R·x + t to camera-to-world poses (rotations R·R_i, positions s·R·p + t)."""
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out


def _umeyama(x, y):
    """Sim(3) (s, R, t) minimising Σ‖s·R·x_i + t − y_i‖² for points x, y [n, 3] (Umeyama 1991)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    s_fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s_fix[2, 2] = -1
    R = u @ s_fix @ vt
    s = np.trace(np.diag(d) @ s_fix) / (xc**2).sum(1).mean()
    return s, R, my - s * R @ mx


# ----------------------------------------------------------------------------------------------------------------
# Hand cases


def test_identity_trajectory_zero_errors():
    c2w = _random_c2w(15, 0)
    r = P.evaluate_sequence(c2w, P.c2w_to_tum(c2w), np.arange(15) * 0.5)
    assert not r.failed and r.num_poses == 15
    assert r.ate < 1e-12 and r.rpe_trans < 1e-12 and r.rpe_rot < 1e-6


def test_sim3_transformed_estimate_is_aligned():
    gt = _random_c2w(30, 1)
    R = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
    est = _sim3(gt, 0.37, R, np.array([5.0, -2.0, 1.5]))
    r = P.evaluate_sequence(est, P.c2w_to_tum(gt), np.arange(30.0))
    assert r.ate < 1e-9 and r.rpe_trans < 1e-9 and r.rpe_rot < 1e-6


def test_known_translation_step_error():
    # Planar zig-zag GT with identity rotations; the estimate leaves the plane by ±e, alternating, so every step
    # has a 2e error along z. The Sim(3) barely moves it; the exact value uses the NumPy Umeyama below.
    n = 41
    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, 0, 3] = np.arange(n, dtype=float)
    gt[:, 1, 3] = np.where(np.arange(n) % 2 == 0, 0.0, 1.0)  # zig-zag: rank-2 positions
    e = 0.05
    est = gt.copy()
    est[:, 2, 3] = e * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # ±e off the plane, alternating
    r = P.evaluate_sequence(est, P.c2w_to_tum(gt), np.arange(n, dtype=float))
    s, R, t = _umeyama(est[:, :3, 3], gt[:, :3, 3])
    aligned = _sim3(est, s, R, t)
    d_est = np.einsum("nji,nj->ni", aligned[:-1, :3, :3], aligned[1:, :3, 3] - aligned[:-1, :3, 3])
    d_gt = np.einsum("nji,nj->ni", gt[:-1, :3, :3], gt[1:, :3, 3] - gt[:-1, :3, 3])
    # E = (Q_i⁻¹Q_j)⁻¹(P_i⁻¹P_j), equal rotations: trans(E) = R_rel⁻¹(d_est − d_gt) (norm unchanged by R)
    expected = math.sqrt(np.mean(np.sum((d_est - d_gt) ** 2, axis=1)))
    assert abs(r.rpe_trans - expected) < 1e-9
    assert abs(expected - 2 * e) < 2e-3  # the hand value: ≈ 2e per step


def test_known_rotation_increment_error():
    n = 25
    step = np.deg2rad(4.0)
    err = np.deg2rad(0.5)
    gt = np.tile(np.eye(4), (n, 1, 1))
    est = gt.copy()
    pos = np.random.default_rng(3).normal(size=(n, 3))
    gt[:, :3, 3] = est[:, :3, 3] = pos  # same positions: Sim(3) = identity
    for i in range(n):
        gt[i, :3, :3] = Rotation.from_rotvec([0, 0, i * step]).as_matrix()
        est[i, :3, :3] = Rotation.from_rotvec([0, 0, i * (step + err)]).as_matrix()
    r = P.evaluate_sequence(est, P.c2w_to_tum(gt), np.arange(n, dtype=float))
    assert r.ate < 1e-9
    assert abs(r.rpe_rot - 0.5) < 1e-6


def test_association_drops_unmatched_timestamps():
    gt = _random_c2w(20, 4)
    gt_t = np.arange(20) * 0.1
    keep = np.array([0, 1, 2, 4, 5, 7, 8, 9, 11, 12, 15, 16, 18, 19])
    # different count: the prediction keeps its own timestamps; 0.004 s jitter is within the 0.01 s window
    pred_t = gt_t[keep] + 0.004
    r = P.evaluate_sequence(gt[keep], P.c2w_to_tum(gt), gt_t, pred_timestamps=pred_t)
    assert not r.failed and r.num_poses == len(keep) and r.ate < 1e-9
    # a prediction stamped 0…F−1 against GT stamps 0.1 apart matches only t = 0 and 1 → degenerate → failed
    r2 = P.evaluate_sequence(gt[:10], P.c2w_to_tum(gt), gt_t)
    assert r2.failed and r2.num_poses == 2
    # same count: the GT stamps replace the prediction's, whatever they were
    r3 = P.evaluate_sequence(gt, P.c2w_to_tum(gt), gt_t, pred_timestamps=np.arange(20) * 7.0)
    assert not r3.failed and r3.num_poses == 20


@pytest.mark.parametrize("case", ["two_poses", "same_position", "collinear", "no_match", "nan"])
def test_degenerate_is_failed_not_exception(case):
    gt = _random_c2w(10, 5)
    est = gt.copy()
    ts = np.arange(10.0)
    if case == "two_poses":
        gt, est, ts = gt[:2], est[:2], ts[:2]
    elif case == "same_position":
        est[:, :3, 3] = 1.0
    elif case == "collinear":
        est[:, :3, 3] = np.outer(np.arange(10.0), [1.0, 2.0, 3.0])
    elif case == "nan":
        est[3, 0, 0] = np.nan
    pred_t = ts + 100.0 if case == "no_match" else None
    if case == "no_match":
        est = est[:9]
        pred_t = pred_t[:9]
    r = P.evaluate_sequence(est, P.c2w_to_tum(gt), ts, pred_timestamps=pred_t)
    assert r.failed and r.reason and math.isnan(r.ate)


def test_evo_sim3_matches_numpy_umeyama():
    from evo import main_ape
    from evo.core.metrics import PoseRelation

    gt = _random_c2w(40, 6)
    est = _sim3(gt, 1.7, Rotation.from_rotvec([1.0, 0.2, -0.4]).as_matrix(), np.array([0.5, 1.0, -3.0]))
    est[:, :3, 3] += np.random.default_rng(7).normal(scale=0.05, size=(40, 3))
    ref_t = P.trajectory_from_c2w(gt)
    est_t = P.trajectory_from_c2w(est)
    res = main_ape.ape(ref_t, est_t, PoseRelation.translation_part, align=True, correct_scale=True)
    s, R, t = _umeyama(est[:, :3, 3], gt[:, :3, 3])
    sim3 = np.eye(4)
    sim3[:3, :3] = s * R
    sim3[:3, 3] = t
    np.testing.assert_allclose(res.np_arrays["alignment_transformation_sim3"], sim3, atol=1e-10)
    err = np.linalg.norm(est[:, :3, 3] @ (s * R).T + t - gt[:, :3, 3], axis=1)
    assert abs(res.stats["rmse"] - math.sqrt(np.mean(err**2))) < 1e-12
    assert abs(P.evaluate_sequence(est, P.c2w_to_tum(gt), np.arange(40.0)).ate - res.stats["rmse"]) < 1e-12


def test_aggregate_and_official_rounding():
    a = P.PoseMetrics(0.1234564, 0.0100005, 1.5, 10)
    b = P.PoseMetrics(0.2, 0.02, 0.5, 10)
    f = P._failed("Degenerate covariance rank", 2)
    m = P.aggregate_sequences({"a": a, "b": b, "f": f})
    assert m["num_sequences"] == 2 and m["num_failed"] == 1
    assert abs(m["ate"] - (0.1234564 + 0.2) / 2) < 1e-15
    assert P.official_rounded(0.1234564) == 0.123456 and P.official_rounded(math.nan) == 0.0
    mr = P.aggregate_sequences([a, b, f], official_rounding=True)
    assert abs(mr["ate"] - (0.123456 + 0.2) / 2) < 1e-15
    assert P.aggregate_sequences([f])["ate"] == 0.0
    assert P.official_average_line(mr).startswith("Average ATE: 0.16173, Average RPE trans: 0.01500")


# ----------------------------------------------------------------------------------------------------------------
# Readers


def _write_cam(path, w2c, K=None, tag=P.SINTEL_TAG):
    K = np.diag([500.0, 500.0, 1.0]) if K is None else K
    with open(path, "wb") as f:
        f.write(np.float32(tag).tobytes())
        f.write(np.asarray(K, "<f8").tobytes())
        f.write(np.asarray(w2c[:3], "<f8").tobytes())


def test_read_tum_groundtruth(tmp_path):
    p = tmp_path / "groundtruth_90.txt"
    p.write_text(
        "# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"
        "1305031102.1758 1.3405 0.6266 1.6575 0.6574 0.6126 -0.2949 -0.3248\n"
        "1305031102.2159 1.3303 0.6256 1.6464 0.6579 0.6161 -0.2932 -0.3189\n"
    )
    tum, t = P.read_tum_groundtruth(p)
    assert tum.shape == (2, 7) and t[0] == 1305031102.1758
    np.testing.assert_array_equal(tum[0], [1.3405, 0.6266, 1.6575, -0.3248, 0.6574, 0.6126, -0.2949])
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 2 3 0 0 0 1\n1 1 2 3 0 0 1\n")
    with pytest.raises(P.PoseDataError, match=r"bad\.txt:2: expected 8") as e:
        P.read_tum_groundtruth(bad)
    assert "\n" not in str(e.value)
    bad.write_text("0 1 2 x 0 0 0 1\n")
    with pytest.raises(P.PoseDataError, match=r"bad\.txt:1: non-numeric"):
        P.read_tum_groundtruth(bad)
    with pytest.raises(P.PoseDataError, match="missing.txt"):
        P.read_tum_groundtruth(tmp_path / "missing.txt")


def test_read_scannet_poses(tmp_path):
    c2w = _random_c2w(5, 8)
    p = tmp_path / "pose_90.txt"
    np.savetxt(p, c2w.reshape(5, 16))
    tum, t = P.read_scannet_poses(p)
    np.testing.assert_array_equal(t, np.arange(5.0))
    np.testing.assert_allclose(tum[:, :3], c2w[:, :3, 3])
    back = Rotation.from_quat(np.roll(tum[:, 3:], -1, axis=1)).as_matrix()
    np.testing.assert_allclose(back, c2w[:, :3, :3], atol=1e-12)
    lines = p.read_text().splitlines()
    lines[2] = "-inf " * 15 + "-inf"
    p.write_text("\n".join(lines) + "\n")
    tum, _ = P.read_scannet_poses(p)
    assert not np.isfinite(tum[2]).all() and np.isfinite(tum[[0, 1, 3, 4]]).all()
    assert P.evaluate_sequence(c2w, tum, np.arange(5.0)).failed
    lines[3] = "1 0 0"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(P.PoseDataError, match=r"pose_90\.txt:4: expected 16"):
        P.read_scannet_poses(p)


def test_read_sintel_groundtruth(tmp_path):
    seq = tmp_path / "alley_2"
    seq.mkdir()
    c2w = _random_c2w(4, 9)
    for i in range(4):
        _write_cam(seq / f"frame_{i + 1:04d}.cam", np.linalg.inv(c2w[i]))
    (seq / "notes.txt").write_text("ignored")
    K, w2c = P.read_sintel_cam(seq / "frame_0001.cam")
    np.testing.assert_allclose(w2c, np.linalg.inv(c2w[0])[:3])
    assert K[0, 0] == 500.0
    tum, t = P.read_sintel_groundtruth(seq)
    np.testing.assert_array_equal(t, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(tum[:, :3], c2w[:, :3, 3] - c2w[:, :3, 3].mean(0), atol=1e-12)
    _write_cam(seq / "frame_0005.cam", np.eye(4), tag=1.0)
    with pytest.raises(P.PoseDataError, match=r"frame_0005\.cam: wrong tag"):
        P.read_sintel_groundtruth(seq)
    (seq / "frame_0005.cam").write_bytes(np.float32(P.SINTEL_TAG).tobytes() + b"\0" * 16)
    with pytest.raises(P.PoseDataError, match=r"frame_0005\.cam: 20 bytes"):
        P.read_sintel_groundtruth(seq)


# ----------------------------------------------------------------------------------------------------------------
# Official comparison (runs only with HUMAN3R_OFFICIAL_HUMAN3R set)


def load_official(checkout):
    """The official ``eval/relpose/evo_utils.py`` (and ``c2w_to_tumpose`` of ``utils.py``) as modules.

    Departure patched in memory: the ``est_name="traj",`` keyword evo 1.38 no longer accepts is removed from the
    source before it runs. ``utils.py``'s unused heavy imports (cv2, roma, imageio) are stubbed.
    """
    relpose = os.path.join(checkout, "eval", "relpose")
    with open(os.path.join(relpose, "evo_utils.py")) as f:
        src = f.read()
    assert src.count('est_name="traj",') == 4
    evo_utils = types.ModuleType("official_evo_utils")
    evo_utils.__file__ = os.path.join(relpose, "evo_utils.py")
    exec(compile(src.replace('est_name="traj",', ""), evo_utils.__file__, "exec"), evo_utils.__dict__)
    # utils.py: only c2w_to_tumpose / get_tum_poses are needed; run them with stubbed imports.
    stubs = {name: types.ModuleType(name) for name in ("cv2", "roma", "imageio", "imageio.v2")}
    eval_pkg = types.ModuleType("eval")
    eval_pkg.__path__ = []
    relpose_pkg = types.ModuleType("eval.relpose")
    relpose_pkg.__path__ = []
    stubs.update({"eval": eval_pkg, "eval.relpose": relpose_pkg, "eval.relpose.evo_utils": evo_utils})
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("official_relpose_utils", os.path.join(relpose, "utils.py"))
        utils = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(utils)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return evo_utils, utils


def official_cases():
    """(name, pred c2w [F,4,4], gt c2w [N,4,4], gt timestamps [N]) for the comparison."""
    cases = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        n = int(rng.integers(10, 120))
        gt = _random_c2w(n, 200 + seed)
        R = Rotation.random(random_state=300 + seed).as_matrix()
        est = _sim3(gt, float(rng.uniform(0.1, 5.0)), R, rng.normal(size=3) * 3)
        est[:, :3, 3] += rng.normal(scale=0.05 * (seed + 1), size=(n, 3))
        noise = Rotation.from_rotvec(rng.normal(scale=0.02 * (seed + 1), size=(n, 3))).as_matrix()
        est[:, :3, :3] = est[:, :3, :3] @ noise
        t = 1305031102.0 + np.arange(n) / 30.0 if seed % 2 else np.arange(n, dtype=float)
        cases.append((f"random{seed}", est, gt, t))
    gt = _random_c2w(60, 400)
    cases.append(("shorter_pred", _sim3(gt[:50], 2.0, np.eye(3), np.ones(3)), gt, np.arange(60, dtype=float)))
    return cases


def official_metrics(evo_utils, utils, pred_c2w, gt_tum, gt_t, filename):
    """The official eval_metrics on our inputs: prediction through get_tum_poses, GT as [rows, timestamps]."""
    import torch

    pred = utils.get_tum_poses(torch.from_numpy(pred_c2w.astype(np.float64)))
    return evo_utils.eval_metrics(pred, [gt_tum.copy(), gt_t.copy()], seq="case", filename=filename)


@pytest.mark.skipif(not OFFICIAL, reason="set HUMAN3R_OFFICIAL_HUMAN3R to a Human3R checkout (with eval/relpose)")
def test_matches_official(tmp_path):
    pytest.importorskip("torch")
    evo_utils, utils = load_official(OFFICIAL)
    ours, theirs = {}, {}
    for name, est, gt, t in official_cases():
        gt_tum = P.c2w_to_tum(gt)
        ref = official_metrics(evo_utils, utils, est, gt_tum, t, str(tmp_path / f"{name}_eval_metric.txt"))
        r = P.evaluate_sequence(est, gt_tum, t)
        assert not r.failed, name
        for k, v in zip(("ate", "rpe_trans", "rpe_rot"), ref):
            assert abs(getattr(r, k) - v) <= 1e-6 * max(abs(v), 1e-12), (name, k, getattr(r, k), v)
        ours[name] = r
        theirs[name] = evo_utils.extract_metrics(str(tmp_path / f"{name}_eval_metric.txt"))
    # the launcher's re-parsed values and mean
    for name, r in ours.items():
        assert tuple(P.official_rounded(getattr(r, k)) for k in ("ate", "rpe_trans", "rpe_rot")) == theirs[name]
    avg = evo_utils.calculate_averages([(n,) + v for n, v in sorted(theirs.items())])
    m = P.aggregate_sequences(ours, official_rounding=True)
    assert (m["ate"], m["rpe_trans"], m["rpe_rot"]) == pytest.approx(avg, rel=1e-12)
    # readers: Sintel and ScanNet files through the official loaders
    gt = _random_c2w(12, 500)
    seq = tmp_path / "sintel_seq"
    seq.mkdir()
    for i in range(12):
        _write_cam(seq / f"frame_{i + 1:04d}.cam", np.linalg.inv(gt[i]))
    o_tum, o_t = evo_utils.load_traj(str(seq))
    tum, t = P.read_sintel_groundtruth(seq)
    np.testing.assert_allclose(tum, o_tum, atol=1e-12)
    np.testing.assert_array_equal(t, o_t.reshape(-1))
    est = _sim3(gt, 0.5, np.eye(3), np.zeros(3))
    est[:, :3, 3] += np.random.default_rng(1).normal(scale=0.1, size=(12, 3))
    # load_sintel_traj returns timestamps [N, 1]; evo 1.38's association rejects them ("object too deep"), older
    # evo treated them as [N]: pass them flattened.
    ref = official_metrics(evo_utils, utils, est, o_tum, o_t.reshape(-1), str(tmp_path / "s_eval_metric.txt"))
    r = P.evaluate_sequence(est, tum, t)
    for k, v in zip(("ate", "rpe_trans", "rpe_rot"), ref):
        assert abs(getattr(r, k) - v) <= 1e-6 * abs(v), ("sintel", k)
    np.savetxt(tmp_path / "pose_90.txt", gt.reshape(12, 16))
    o_tum, o_t = evo_utils.load_traj(str(tmp_path / "pose_90.txt"), traj_format="replica")
    tum, t = P.read_scannet_poses(tmp_path / "pose_90.txt")
    np.testing.assert_allclose(tum, o_tum, atol=1e-12)
    np.testing.assert_array_equal(t, o_t)
