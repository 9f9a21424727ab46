"""Official camera-pose metrics (CUT3R / TTT3R / Human3R ``eval/relpose``), one sequence at a time, through evo.

Protocol (facts read from AdrienBousquieEPFL/Human3R@3ad2074 ``eval/relpose``:
``evo_utils.py`` ``eval_metrics`` / ``load_traj`` / ``load_sintel_traj`` / ``load_replica_traj`` /
``extract_metrics`` / ``calculate_averages``, ``utils.py`` ``c2w_to_tumpose`` / ``get_tum_poses``, ``launch.py``
``eval_pose_estimation_dist``):

1. prediction: camera-to-world matrices [F, 4, 4] (OpenCV axes) → TUM rows (x, y, z, qw, qx, qy, qz) with the
   quaternion from scipy ``Rotation.from_matrix`` (``c2w_to_tum``); timestamps 0…F−1.
2. GT as TUM rows + timestamps: TUM ``groundtruth*.txt`` (``read_tum_groundtruth``), ScanNet ``pose_*.txt``
   flattened c2w (``read_scannet_poses``), Sintel ``camdata_left/<seq>/*.cam`` (``read_sintel_groundtruth``).
3. both become evo ``PoseTrajectory3D`` built from positions + quaternions (so evo rebuilds the rotations from
   the quaternions); when the prediction and the GT have the same number of poses, the prediction takes the GT
   timestamps; then ``sync.associate_trajectories(gt, pred)`` (nearest time, max |Δt| 0.01).
4. ATE: ``main_ape.ape`` translation part, ``align=True, correct_scale=True`` (Umeyama Sim(3) on positions), RMSE.
5. RPE rot (degrees) then RPE trans: ``main_rpe.rpe`` with delta 1 frame, ``all_pairs=True``,
   ``rel_delta_tol=0.01``, ``align=True, correct_scale=True``, RMSE.
6. dataset score: plain mean over the sequences that did not fail (``aggregate_sequences``).

Official quirks reproduced here:
- evo aligns the estimate IN PLACE: ATE leaves it Sim(3)-aligned, so each RPE call re-aligns an already aligned
  estimate (a near-identity Sim(3)); the three evo calls run in the official order on the same objects.
- RPE rot is computed before RPE trans (the second re-alignment sees the first one's output).
- Sintel GT: world→camera 3×4 inverted to camera→world, positions mean-centred (rotations untouched), timestamps
  = the frame number of each ``*.cam`` name; ScanNet GT rotations go through evo's quaternion conversion
  (``PosePath3D(poses_se3=…).orientations_quat_wxyz``) before the trajectory is rebuilt, as the official
  ``load_replica_traj`` does.
- A sequence whose Umeyama covariance is rank-deficient (fewer than 3 poses, identical or collinear positions:
  evo raises "Degenerate covariance rank") or whose poses are not finite (evo's quaternion conversion raises
  "Eigenvalues did not converge") is skipped by the official launcher, which writes no metric file for it: here
  it is a ``PoseMetrics`` with ``failed=True`` and the reason, left out of the mean.
- The official launcher writes each sequence's evo results with 6 decimals to ``<seq>_eval_metric.txt`` and
  re-parses those files for the mean: ``official_rounded`` rounds the per-sequence values that way (NaN/inf
  would parse as 0.0), ``aggregate_sequences(..., official_rounding=True)`` averages the rounded values, and
  ``official_average_line`` prints the final line with 5 decimals as ``_error_log.txt`` does.

Departure (evo 1.38): the official code passes ``est_name="traj"`` to ``main_ape.ape`` and ``main_rpe.rpe``;
evo 1.38 removed that keyword (the names now come from ``trajectory.name``), so the call raises ``TypeError``.
Here the estimate's ``name`` is set to ``"traj"`` instead, which only labels the evo results; no number changes.
The official Sintel loader returns timestamps of shape [N, 1], which evo 1.38's ``associate_trajectories``
rejects (numpy "object too deep for desired array"; older evo treated them as [N]): timestamps are [N] here.
The TUM reader splits on any whitespace (evo's reader wants single spaces) and checks every row.

Precision: everything is float64, as in the official run (evo works in float64; the prediction is float32 from
torch there, converted by scipy in float64).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from copy import deepcopy

import numpy as np
from scipy.spatial.transform import Rotation

from human3r_jax.errors import Human3rError

METRICS = ("ate", "rpe_trans", "rpe_rot")
# Titles evo 1.38 gives the results the official extract_metrics looks for, with the official names.
OFFICIAL_NAMES = {"ate": "ATE", "rpe_trans": "RPE trans", "rpe_rot": "RPE rot"}

MAX_TIME_DIFF = 0.01  # associate_trajectories max |Δt| (s), evo's default, used as is
RPE_DELTA = 1  # frames
RPE_REL_DELTA_TOL = 0.01
SINTEL_TAG = 202021.25  # float32 tag opening every Sintel .cam file
EST_NAME = "traj"


class PoseDataError(Human3rError):
    """A malformed trajectory file: one line naming the file and the line or entry."""


@dataclasses.dataclass(frozen=True)
class PoseMetrics:
    """Per-sequence result: ATE (m, GT scale), RPE trans (m), RPE rot (degrees), poses after association.

    ``failed``: evo could not evaluate the sequence (``reason`` says why); the metrics are then NaN and the
    sequence is left out of the dataset mean, as the official launcher skips it.
    """

    ate: float
    rpe_trans: float
    rpe_rot: float
    num_poses: int
    failed: bool = False
    reason: str | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in METRICS}


def _failed(reason: str, num_poses: int = 0) -> PoseMetrics:
    return PoseMetrics(math.nan, math.nan, math.nan, num_poses, failed=True, reason=reason)


# ----------------------------------------------------------------------------------------------------------------
# Conversions


def c2w_to_tum(c2w):
    """Camera-to-world [F, 4, 4] (or [F, 3, 4]) → TUM rows [F, 7] (x, y, z, qw, qx, qy, qz), float64.

    The quaternion is scipy's ``Rotation.from_matrix(R).as_quat()`` reordered scalar-first, as the official
    ``c2w_to_tumpose`` does (scipy projects a slightly non-orthonormal R onto the nearest rotation).
    """
    c2w = np.asarray(c2w, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"expected camera-to-world matrices [F, 4, 4], got shape {c2w.shape}")
    xyzw = Rotation.from_matrix(c2w[:, :3, :3]).as_quat()
    return np.concatenate([c2w[:, :3, 3], xyzw[:, 3:], xyzw[:, :3]], axis=1)


def make_trajectory(tum, timestamps, name: str | None = None):
    """TUM rows [N, 7] (x, y, z, qw, qx, qy, qz) and timestamps [N] → evo ``PoseTrajectory3D`` (float64)."""
    from evo.core.trajectory import PoseTrajectory3D

    tum = np.asarray(tum, np.float64)
    timestamps = np.asarray(timestamps, np.float64).reshape(-1)
    if tum.ndim != 2 or tum.shape[1] != 7 or tum.shape[0] != timestamps.shape[0]:
        raise ValueError(f"expected TUM rows [N, 7] and N timestamps, got {tum.shape} and {timestamps.shape}")
    return PoseTrajectory3D(
        positions_xyz=tum[:, :3], orientations_quat_wxyz=tum[:, 3:], timestamps=timestamps, name=name
    )


def trajectory_from_c2w(c2w, timestamps=None, name: str | None = None):
    """Camera-to-world [F, 4, 4] and timestamps [F] (default 0…F−1) → evo ``PoseTrajectory3D``."""
    tum = c2w_to_tum(c2w)
    if timestamps is None:
        timestamps = np.arange(tum.shape[0], dtype=np.float64)
    return make_trajectory(tum, timestamps, name=name)


# ----------------------------------------------------------------------------------------------------------------
# GT readers


def read_tum_groundtruth(path):
    """TUM ``groundtruth*.txt`` → (TUM rows [N, 7] with w first, timestamps [N]).

    Rows ``t tx ty tz qx qy qz qw``; blank lines and lines starting with ``#`` are skipped.
    """
    path = os.fspath(path)
    rows, stamps = [], []
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise PoseDataError(f"{path}: cannot read ({e.strerror or e})") from None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) != 8:
            raise PoseDataError(f"{path}:{lineno}: expected 8 values 't tx ty tz qx qy qz qw', got {len(fields)}")
        try:
            v = [float(x) for x in fields]
        except ValueError:
            raise PoseDataError(f"{path}:{lineno}: non-numeric value in {s!r}") from None
        stamps.append(v[0])
        rows.append(v[1:4] + [v[7]] + v[4:7])
    if not rows:
        raise PoseDataError(f"{path}: no pose rows")
    return np.array(rows, np.float64), np.array(stamps, np.float64)


def read_scannet_poses(path):
    """ScanNet ``pose_*.txt`` (one flattened camera-to-world matrix per line, 16 or 12 values) → (TUM rows [N, 7],
    timestamps 0…N−1).

    The rotation goes through evo's matrix→quaternion conversion as in the official reader. ScanNet marks lost
    tracking with ``-inf`` entries: such a pose is kept as a non-finite row (the official conversion raises
    "Eigenvalues did not converge" and the sequence is skipped; ``evaluate_sequence`` reports it as failed).
    """
    from evo.core.trajectory import PosePath3D

    path = os.fspath(path)
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise PoseDataError(f"{path}: cannot read ({e.strerror or e})") from None
    mats = []
    width = None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) not in (12, 16) or (width is not None and len(fields) != width):
            raise PoseDataError(f"{path}:{lineno}: expected 16 (or 12) values per line, got {len(fields)}")
        width = len(fields)
        try:
            v = np.array([float(x) for x in fields], np.float64)
        except ValueError:
            raise PoseDataError(f"{path}:{lineno}: non-numeric value in {s!r}") from None
        m = np.eye(4)
        m[:3, :] = v[:12].reshape(3, 4)
        mats.append(m)
    if not mats:
        raise PoseDataError(f"{path}: no pose lines")
    mats = np.stack(mats)
    tum = np.full((len(mats), 7), np.nan)
    tum[:, :3] = mats[:, :3, 3]
    finite = np.isfinite(mats).all(axis=(1, 2))
    if finite.any():
        tum[finite, 3:] = PosePath3D(poses_se3=list(mats[finite])).orientations_quat_wxyz
    return tum, np.arange(len(mats), dtype=np.float64)


def read_sintel_cam(path):
    """One Sintel ``.cam`` file → (intrinsics K [3, 3], world→camera [3, 4]), float64.

    Layout (little-endian): float32 tag 202021.25, 9 float64 (K row-major), 12 float64 ([R|t] row-major).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PoseDataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) < 4 + 21 * 8:
        raise PoseDataError(f"{path}: {len(data)} bytes, a .cam file needs {4 + 21 * 8} (tag + K + [R|t])")
    tag = float(np.frombuffer(data, "<f4", count=1)[0])
    if tag != SINTEL_TAG:
        raise PoseDataError(f"{path}: wrong tag {tag!r} (expected {SINTEL_TAG})")
    v = np.frombuffer(data, "<f8", count=21, offset=4).astype(np.float64)
    return v[:9].reshape(3, 3), v[9:].reshape(3, 4)


def read_sintel_groundtruth(cam_dir):
    """Sintel ``camdata_left/<seq>/`` → (TUM rows [N, 7] camera→world with positions mean-centred, timestamps [N]).

    Files: the sorted ``*.cam`` names; timestamp = the number after the last ``_`` (``frame_0001.cam`` → 1.0).
    """
    cam_dir = os.fspath(cam_dir)
    try:
        names = sorted(n for n in os.listdir(cam_dir) if n.endswith(".cam"))
    except OSError as e:
        raise PoseDataError(f"{cam_dir}: cannot list ({e.strerror or e})") from None
    if not names:
        raise PoseDataError(f"{cam_dir}: no .cam files")
    stamps, c2w = [], []
    for n in names:
        try:
            stamps.append(float(n[:-4].split("_")[-1]))
        except ValueError:
            raise PoseDataError(f"{os.path.join(cam_dir, n)}: no frame number after the last '_' in the name") from None
        w2c = np.eye(4)
        w2c[:3] = read_sintel_cam(os.path.join(cam_dir, n))[1]
        try:
            c2w.append(np.linalg.inv(w2c))
        except np.linalg.LinAlgError:
            raise PoseDataError(f"{os.path.join(cam_dir, n)}: singular world-to-camera matrix") from None
    tum = c2w_to_tum(np.stack(c2w))
    tum[:, :3] -= tum[:, :3].mean(axis=0, keepdims=True)
    return tum, np.array(stamps, np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def _is_degenerate(e: Exception) -> bool:
    msg = str(e)
    return "Degenerate covariance rank" in msg or "Eigenvalues did not converge" in msg


def evaluate_trajectories(traj_est, traj_ref) -> PoseMetrics:
    """Official metrics of two evo ``PoseTrajectory3D`` (estimate, GT), already given matching timestamps.

    Associates them (max |Δt| 0.01 s), then ATE, RPE rot, RPE trans in the official order; ``traj_est`` and
    ``traj_ref`` are not modified (the association works on copies, and evo's in-place alignment hits those).
    """
    from evo import EvoException, main_ape, main_rpe
    from evo.core import sync
    from evo.core.metrics import PoseRelation, Unit

    try:
        ref, est = sync.associate_trajectories(traj_ref, traj_est, max_diff=MAX_TIME_DIFF)
    except sync.SyncException as e:
        return _failed(f"association failed: {e}")
    if est is traj_est:  # evo returns copies; never align the caller's object in place
        est = deepcopy(est)
    if ref is traj_ref:
        ref = deepcopy(ref)
    est.name = EST_NAME
    n = int(est.num_poses)
    relations = (("rpe_rot", PoseRelation.rotation_angle_deg), ("rpe_trans", PoseRelation.translation_part))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ate = main_ape.ape(ref, est, PoseRelation.translation_part, align=True, correct_scale=True)
            rpe = {}
            for key, rel in relations:
                rpe[key] = main_rpe.rpe(
                    ref,
                    est,
                    rel,
                    align=True,
                    correct_scale=True,
                    delta=RPE_DELTA,
                    delta_unit=Unit.frames,
                    rel_delta_tol=RPE_REL_DELTA_TOL,
                    all_pairs=True,
                )
    except np.linalg.LinAlgError as e:
        if _is_degenerate(e):
            return _failed(str(e), n)
        raise
    except EvoException as e:  # "Degenerate covariance rank" (GeometryException), too few poses for RPE, ...
        return _failed(str(e) if _is_degenerate(e) else f"{type(e).__name__}: {e}", n)
    return PoseMetrics(
        float(ate.stats["rmse"]), float(rpe["rpe_trans"].stats["rmse"]), float(rpe["rpe_rot"].stats["rmse"]), n
    )


def evaluate_sequence(pred_c2w, gt_tum, gt_timestamps, pred_timestamps=None) -> PoseMetrics:
    """Official per-sequence metrics of predicted camera-to-world [F, 4, 4] against GT TUM rows [N, 7] (w first)
    with GT timestamps [N].

    ``pred_timestamps`` default 0…F−1; they are replaced by the GT timestamps when F == N (official rule), then
    the poses are associated by time. Degenerate or non-finite input gives a failed ``PoseMetrics``.
    """
    pred_c2w = np.asarray(pred_c2w, np.float64)
    gt_tum = np.asarray(gt_tum, np.float64)
    gt_timestamps = np.asarray(gt_timestamps, np.float64).reshape(-1)
    if not np.isfinite(pred_c2w).all():
        return _failed("non-finite predicted pose")
    if not np.isfinite(gt_tum).all():
        return _failed("non-finite GT pose (the official conversion raises 'Eigenvalues did not converge')")
    if pred_timestamps is None:
        pred_timestamps = np.arange(pred_c2w.shape[0], dtype=np.float64)
    pred_timestamps = np.asarray(pred_timestamps, np.float64).reshape(-1)
    if pred_timestamps.shape[0] == gt_timestamps.shape[0]:
        pred_timestamps = gt_timestamps.copy()
    est = trajectory_from_c2w(pred_c2w, pred_timestamps)
    ref = make_trajectory(gt_tum, gt_timestamps)
    return evaluate_trajectories(est, ref)


# ----------------------------------------------------------------------------------------------------------------
# Aggregation and the official rounding

_RMSE_NUMBER = re.compile(r"[0-9.]+")


def official_rounded(value: float) -> float:
    """A per-sequence value as the official launcher reads it back: evo writes ``f"{v:.6f}"`` to
    ``<seq>_eval_metric.txt`` and ``extract_metrics`` parses it with the pattern ``[0-9.]+`` (0.0 when no match,
    e.g. for NaN; a leading sign is not matched)."""
    m = _RMSE_NUMBER.match(f"{value:.6f}")
    return float(m.group(0)) if m else 0.0


def official_rounded_metrics(result: PoseMetrics) -> PoseMetrics:
    """``result`` with ATE, RPE trans and RPE rot rounded as ``official_rounded`` does."""
    return dataclasses.replace(result, **{k: official_rounded(getattr(result, k)) for k in METRICS})


def aggregate_sequences(results, official_rounding: bool = False) -> dict:
    """Plain (unweighted) mean of ATE, RPE trans and RPE rot over the sequences that did not fail.

    ``results``: ``PoseMetrics`` list or a ``{seq: PoseMetrics}`` dict. ``official_rounding``: average the
    6-decimal values the official launcher re-parses. No valid sequence → every mean 0.0 (official behaviour).
    Returns {metric: mean, "num_sequences": used, "num_failed": skipped}.
    """
    if isinstance(results, dict):
        results = list(results.values())
    ok = [r for r in results if not r.failed]
    if official_rounding:
        ok = [official_rounded_metrics(r) for r in ok]
    out = {k: (sum(getattr(r, k) for r in ok) / len(ok) if ok else 0.0) for k in METRICS}
    out["num_sequences"] = len(ok)
    out["num_failed"] = len(results) - len(ok)
    return out


def official_average_line(means: dict) -> str:
    """The closing line of the official ``_error_log.txt`` (5 decimals) for the means of ``aggregate_sequences``."""
    return (
        f"Average ATE: {means['ate']:.5f}, Average RPE trans: {means['rpe_trans']:.5f}, "
        f"Average RPE rot: {means['rpe_rot']:.5f}"
    )
