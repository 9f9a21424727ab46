"""`human3r-jax evaluate human`: local human mesh recovery (3DPW, EMDB-1) and global human motion (EMDB-2, RICH)
as the official `eval/global_human` scores them.

Each sequence runs through the same streaming loop as `reconstruct` (crop mode, the official reset interval
per dataset with TTT3R); its detections (SMPL-X parameters of every kept person), predicted focal and chained
camera-to-world poses are cached as ``OUT_DIR/<dataset>/<seq>.npz``. Scoring, per frame:

1. GT bodies: 3DPW gendered SMPL in the camera frame; EMDB gendered SMPL, RICH gendered SMPL-X (mean hands)
   then mapped to SMPL, both in the world frame and moved into the camera by the GT world→camera pose. Joints
   are the dataset's regressor applied to the SMPL vertices (3DPW: 14 H36M/LSP joints; else the 24 SMPL ones).
2. Predictions: Human3R's head-centred SMPL-X neutral bodies, mapped to SMPL by the smplx2smpl matrix, joints
   by the same regressor, projected with the predicted intrinsics (Weiszfeld focal, principal point W//2, H//2).
3. Greedy 2-D matching against the GT joints projected with the GT intrinsics scaled to the model resolution;
   matched pairs give the camera-frame errors, all pairs the precision/recall/F1.
4. EMDB-2 and RICH: the matched frames' bodies, predicted ones moved to the world by the predicted poses, give
   the world-frame errors (W-MPJPE, WA-MPJPE in 100-frame windows, RTE, jitter, foot sliding).

Per sequence each metric is the mean over matched people rounded to 0.1 as the official log; the dataset value
is the mean of those rows weighted by their matched-people count. Two quirks of the released code change the
numbers and are kept by default (`fix_quirks=False`): Q1, most female 3DPW people are scored against a
male-body GT mesh; Q2, RICH's GT intrinsics ignore the eval crop (they only drive the matching).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from human3r_jax.evaluation import body_models as bm
from human3r_jax.evaluation import human_data
from human3r_jax.evaluation import human_metrics as hm
from human3r_jax.evaluation.frames import eval_crop
from human3r_jax.evaluation.runner import (
    EvaluationError,
    Plan,
    cache_path,
    clean,
    load_cache,
    predict,
    prepare_out,
    write_entry,
)

DATASETS = human_data.DATASETS
# The official run scripts' --reset_interval (run.sh, run_emdb2.sh, run_rich.sh: 1000000 = never).
RESET_INTERVAL = {"3dpw": 100, "emdb1": 100, "emdb2": 50, "rich": None}
GLOBAL = ("emdb2", "rich")
UNITS = {
    "pa_mpjpe": ("PA-MPJPE", "mm (after a similarity Procrustes on the joints)"),
    "mpjpe": ("MPJPE", "mm (joints centred on the hips)"),
    "pve": ("PVE", "mm (SMPL vertices centred on the joint hips)"),
    "pa_pve": ("PA-PVE", "mm"),
    "metric_mpjpe": ("Metric-MPJPE", "mm (no centring)"),
    "metric_pve": ("Metric-PVE", "mm (no centring)"),
    "root_error": ("Root error", "mm (hip centre)"),
    "wa_mpjpe": ("WA-MPJPE", "mm (Sim(3) on each 100-frame window)"),
    "w_mpjpe": ("W-MPJPE", "mm (Sim(3) on the first two frames of each window)"),
    "rte": ("RTE", "% of the GT root path length (rigid alignment)"),
    "rte_scaled": ("Scaled RTE", "% (Sim(3) alignment)"),
    "jitter": ("Jitter", "10 m/s³ (third difference at 30 fps)"),
    "foot_sliding": ("Foot sliding", "mm per contact frame"),
    "precision": ("Precision", "%"),
    "recall": ("Recall", "%"),
    "f1": ("F1", "%"),
    "n_human": ("matched people", "count (the weight of the sequence)"),
}
LOCAL_COLUMNS = ("pa_mpjpe", "mpjpe", "pve", "precision", "recall", "f1")
GLOBAL_COLUMNS = ("wa_mpjpe", "w_mpjpe", "rte", "jitter", "foot_sliding")
CACHE_KEYS = ("frame_name", "c2w", "focal", "image_hw", "person_frame", "rotmat", "shape", "expression", "transl")
CHUNK = 32  # bodies per jitted SMPL-X call (one compilation)


# ---------------------------------------------------------------- running


def _collect(seq):
    """What the scores need of each frame: the kept detections' SMPL-X parameters (flattened, with their frame),
    the focal and the chained camera-to-world pose."""
    names, c2w, focal, hw, person_frame = [], [], [], [], []
    people = {k: [] for k in ("smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl")}

    def add(raw, img, res):
        i = len(names)
        names.append(raw.name)
        c2w.append(np.asarray(res["c2w"], np.float32))
        focal.append(np.float32(res["intrinsics"][0, 0]))
        hw[:] = img.shape[:2]
        valid = np.asarray(res["smpl_valid"], bool)
        person_frame.extend([i] * int(valid.sum()))
        for k in people:
            people[k].append(np.asarray(res[k], np.float32)[valid])

    def finish() -> dict:
        return {
            "frame_name": np.asarray(names, str),
            "c2w": np.stack(c2w),
            "focal": np.asarray(focal, np.float32),
            "image_hw": np.asarray(hw, np.int64),
            "person_frame": np.asarray(person_frame, np.int64),
            "rotmat": np.concatenate(people["smpl_rotmat"]),
            "shape": np.concatenate(people["smpl_shape"]),
            "expression": np.concatenate(people["smpl_expression"]),
            "transl": np.concatenate(people["smpl_transl"]),
        }

    return add, finish


# ---------------------------------------------------------------- bodies


@jax.jit
def _smplx_bodies(model, shape, expression, rotmat, transl):
    from human3r_jax.models.smplx import bodies_in_camera

    return bodies_in_camera(model, shape, expression, rotmat, transl).vertices


def predicted_vertices(models: bm.BodyModels, cache: dict) -> np.ndarray:
    """SMPL vertices [N, 6890, 3] (camera frame, metres) of every cached detection: Human3R's SMPL-X bodies
    (`bodies_in_camera`) mapped by smplx2smpl, in chunks of CHUNK (padded) so that one compilation serves all."""
    n = len(cache["person_frame"])
    out = np.zeros((n, 6890, 3), np.float32)
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        pad = CHUNK - (b - a)
        take = lambda k, a=a, b=b, pad=pad: np.concatenate([cache[k][a:b], np.repeat(cache[k][a : a + 1], pad, 0)])
        verts = np.asarray(
            _smplx_bodies(models.smplx_neutral, take("shape"), take("expression"), take("rotmat"), take("transl"))
        )
        out[a:b] = models.smplx2smpl.apply(verts[: b - a])
    return out


def gt_vertices(models: bm.BodyModels, seq, fix_quirks: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The GT people of a sequence in frame-major, slot order (the official flattening): (rows [R, 2] of
    (frame, slot), camera-frame SMPL vertices [R, 6890, 3], world-frame ones [R, 6890, 3] or None for 3DPW)."""
    rows = np.argwhere(seq.mask)
    f, p = rows[:, 0], rows[:, 1]
    par = {k: v[f, p] for k, v in seq.params.items()}
    if seq.body == "smplx":  # RICH: gendered SMPL-X, mean hands, mapped to SMPL
        gender = _one_gender(seq)
        world = models.smplx2smpl.apply(
            np.asarray(
                bm.smplx_gt_forward(
                    models.smplx_gendered[gender],
                    models.hands_mean[gender],
                    par["betas"],
                    par["global_orient"],
                    par["body_pose"],
                    par["transl"],
                ),
                np.float32,
            )
        )
    else:
        pose = np.concatenate([par["global_orient"][:, None], par["body_pose"]], axis=1)
        if seq.space == "world":  # EMDB: one gendered model for the sequence
            world, _ = bm.smpl_forward(models.smpl[_one_gender(seq)], par["betas"], pose, par["transl"])
        else:  # 3DPW: camera frame
            cam, _ = bm.smpl_forward(models.smpl["male"], par["betas"], pose, par["transl"])
            female_rows = _female_rows(seq, rows, fix_quirks)
            if len(female_rows):
                fem, _ = bm.smpl_forward(
                    models.smpl["female"], par["betas"][female_rows], pose[female_rows], par["transl"][female_rows]
                )
                cam[female_rows] = fem
            return rows, cam, None
    T = seq.T_w2c[f]
    cam = np.einsum("rij,rvj->rvi", T[:, :3, :3], world) + T[:, None, :3, 3]
    return rows, cam, world


def _one_gender(seq) -> str:
    g = int(seq.gender[seq.mask].max())
    return {1: "male", 2: "female"}[g]


def _female_rows(seq, rows: np.ndarray, fix_quirks: bool) -> np.ndarray:
    """Rows that get the female model. Fixed: every female person. Official (Q1): the released code writes the
    female vertices at row indices taken from each female person's per-frame slot (0 or 1), so only rows 0 and
    1 of the whole sequence can be female, and they are whenever that slot holds a woman anywhere."""
    female = seq.gender[rows[:, 0], rows[:, 1]] == 2
    if fix_quirks:
        return np.flatnonzero(female)
    slots = np.unique(rows[female, 1])
    return slots[slots < len(rows)]


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """[N, J, 3] camera-frame points, K [N, 3, 3] → pixels [N, J, 2] (divide by z, then apply K)."""
    y = points / points[..., 2:3]
    return np.einsum("nij,nkj->nki", K, y)[..., :2]


def gt_intrinsics(seq, model_hw: tuple[int, int], size: int, fix_quirks: bool) -> np.ndarray:
    """GT K [F, 3, 3] at the model resolution. Official: each axis scaled by model size / original size (for
    RICH this ignores the 3-px crop and scales fy by 368/3008, Q2). Fixed: the loader's exact resize and crop."""
    from human3r_jax.data.images import open_image

    w0, h0 = open_image(seq.frames[0]).size
    K = np.array(seq.K, np.float64)
    h, w = model_hw
    if fix_quirks:
        sx, sy, left, top = eval_crop(w0, h0, size)
        K[:, 0] *= sx
        K[:, 1] *= sy
        K[:, 0, 2] -= left
        K[:, 1, 2] -= top
    else:
        K[:, 0] *= w / w0
        K[:, 1] *= h / h0
    return K


# ---------------------------------------------------------------- scoring


def score_sequence(seq, cache: dict, models: bm.BodyModels, dataset: str, size: int, fix_quirks: bool) -> dict:
    """One sequence's official log row (`human_metrics.sequence_metrics`)."""
    h, w = (int(x) for x in cache["image_hw"])
    K_gt = gt_intrinsics(seq, (h, w), size, fix_quirks)
    rows, gt_cam, gt_world = gt_vertices(models, seq, fix_quirks)
    reg = models.regressor.astype(np.float64)
    gt_j_cam = np.einsum("jv,rvi->rji", reg, gt_cam)
    gt_j2d = _project(gt_j_cam, K_gt[rows[:, 0]])

    pred_cam = predicted_vertices(models, cache).astype(np.float64)
    pred_j_cam = np.einsum("jv,nvi->nji", reg, pred_cam)
    pf = cache["person_frame"]
    K_pred = np.zeros((len(pf), 3, 3))
    K_pred[:, 0, 0] = K_pred[:, 1, 1] = cache["focal"][pf]
    K_pred[:, 0, 2], K_pred[:, 1, 2], K_pred[:, 2, 2] = w // 2, h // 2, 1.0
    pred_j2d = _project(pred_j_cam, K_pred) if len(pf) else np.zeros((0, reg.shape[0], 2))

    counter = {"count": 0, "miss": 0, "fp": 0, "n_human": 0}
    per: dict[str, list] = {}
    world: dict[str, list] = {"pred_j": [], "gt_j": [], "pred_v": [], "gt_v": []}
    c2w = cache["c2w"].astype(np.float64)
    for f in range(len(seq.frames)):
        pi, gi = np.flatnonzero(pf == f), np.flatnonzero(rows[:, 0] == f)
        matches, fps, misses = hm.match_2d_greedy(pred_j2d[pi], gt_j2d[gi])
        counter["count"] += len(gi)
        counter["miss"] += len(misses)
        counter["fp"] += len(fps)
        if not len(matches):
            continue
        counter["n_human"] += len(matches)
        p, g = pi[matches[:, 0]], gi[matches[:, 1]]
        m = hm.camcoord_metrics(pred_j_cam[p], gt_j_cam[g], pred_cam[p], gt_cam[g], models.pelvis)
        for k, v in m.items():
            per.setdefault(k, []).append(v)
        if dataset in GLOBAL:
            R, t = c2w[f, :3, :3], c2w[f, :3, 3]
            world["pred_j"].append(pred_j_cam[p] @ R.T + t)
            world["pred_v"].append(pred_cam[p] @ R.T + t)
            world["gt_v"].append(gt_world[g])
            world["gt_j"].append(np.einsum("jv,rvi->rji", reg, gt_world[g]))
    glob = None
    if dataset in GLOBAL and world["pred_j"]:
        cat = {k: np.concatenate(v) for k, v in world.items()}
        glob = hm.global_metrics(cat["pred_j"], cat["gt_j"], cat["pred_v"], cat["gt_v"])
    return hm.sequence_metrics(counter, per, glob)


# ---------------------------------------------------------------- the command


def _annotations_3dpw(root: Path, out: Path, models: bm.BodyModels, progress: bool) -> dict:
    """The prepared 3DPW annotations: --root's own prepared file, else OUT_DIR/3dpw/3dpw_test.pkl made once
    from the raw release as the official preparation does."""
    found = human_data.find_3dpw_annotations(root)
    if found is not None:
        return human_data.read_3dpw_annotations(found)
    cached = out / "3dpw" / "3dpw_test.pkl"
    if cached.is_file():
        return human_data.read_3dpw_annotations(cached)
    annots = human_data.prepare_3dpw(root, models.smpl["male"], models.smpl["female"], progress=progress)
    cached.parent.mkdir(exist_ok=True)
    human_data.save_3dpw_annotations(cached, annots)
    return annots


def evaluate(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    body_models: str | Path,
    checkpoint: str | Path | None = None,
    random_weights: str | None = None,
    rescore: bool = False,
    reset_interval: int | None = None,
    ttt3r: bool | None = None,
    size: int = 512,
    sequences: Sequence[str] | None = None,
    fix_quirks: bool = False,
    progress: bool = True,
    on_sequence: Callable[[str], None] | None = None,
    print_table: bool = True,
) -> dict:
    """Run (or resume) the human evaluation of one dataset and write OUT_DIR/metrics.json; returns its entry.

    reset_interval / ttt3r: None = the official value (`RESET_INTERVAL`, TTT3R on); reset_interval 0 = never.
    sequences: score only these (names as the dataset spells them). fix_quirks: Q1/Q2 fixed (other numbers than
    the paper's protocol)."""
    root, out, models_root = Path(root), Path(out), Path(body_models)
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown human dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if not root.exists():
        raise EvaluationError(f"{root}: no such folder (--root)")
    if root.is_file() and dataset != "3dpw":  # only 3DPW's --root may be a (prepared annotation) file
        raise EvaluationError(f"{root}: a file; --root is the {dataset} folder")
    if not models_root.is_dir():
        raise EvaluationError(f"{models_root}: no such folder (--body-models: the SMPL / SMPL-X files)")
    if size not in (512, 224):
        raise EvaluationError(f"--size must be 512 or 224, got {size}")
    models = bm.load_body_models(models_root, dataset)  # before any model run: a missing file fails now
    prepare_out(out, [root, checkpoint, models_root])
    annots = _annotations_3dpw(root, out, models, progress) if dataset == "3dpw" else None
    # 3DPW's --root may be the prepared annotation file itself, beside imageFiles/
    data_root = root.parent if (dataset == "3dpw" and root.is_file()) else root
    seqs = human_data.list_sequences(dataset, data_root, annotations=annots, only=sequences)

    def settings(human3r: bool) -> dict:
        if not human3r:
            raise EvaluationError("the human benchmarks need a Human3R checkpoint (this is a CUT3R model: no people)")
        ri = RESET_INTERVAL[dataset] if reset_interval is None else (reset_interval or None)
        return {"size": size, "crop": True, "reset_interval": ri, "ttt3r": True if ttt3r is None else bool(ttt3r)}

    plan = Plan("human", dataset, seqs, settings, _collect, guarded=[root, models_root])
    cache_dir, used = predict(
        plan,
        out,
        checkpoint=checkpoint,
        random_weights=random_weights,
        rescore=rescore,
        progress=progress,
        on_sequence=on_sequence,
    )
    if not used["model"]["human3r"]:
        raise EvaluationError(f"{cache_dir}: predictions of a CUT3R model; the human benchmarks need Human3R")
    rows = {}
    for s in seqs:
        cache = load_cache(cache_path(cache_dir, s.name), CACHE_KEYS, len(s.frames))
        rows[s.name] = score_sequence(s, cache, models, dataset, used["size"], fix_quirks)
    entry = {
        "task": "human",
        "dataset": dataset,
        "settings": used,
        "quirks": "fixed" if fix_quirks else "official",
        "sequences_listed": [s.name for s in seqs],
        "metrics": {k: {"name": n, "unit": u} for k, (n, u) in UNITS.items()},
        "aggregation": "per sequence: mean over matched people rounded to 0.1 (P/R/F1 to 1 %) as the official "
        "log; dataset: mean of those rows weighted by matched people (n_human > 0 only)",
        "sequences": clean(rows),
        "mean": clean(hm.aggregate(list(rows.values()))),
    }
    write_entry(out, entry)
    if print_table:
        print(markdown_table(entry))
    return entry


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.1f}"


def markdown_table(entry: dict) -> str:
    """The metrics of one human `evaluate` entry as Markdown (mm unless stated)."""
    cols = LOCAL_COLUMNS + (GLOBAL_COLUMNS if entry["dataset"] in GLOBAL else ())
    head = " | ".join(UNITS[c][0] + (" (%)" if c in ("precision", "recall", "f1", "rte") else "") for c in cols)
    lines = [
        f"### human — {entry['dataset']} ({entry['quirks']} protocol; errors in mm)",
        "",
        f"| sequence | matched | {head} |",
        "|---|---|" + "---|" * len(cols),
    ]
    for k, r in entry["sequences"].items():
        lines.append(f"| {k} | {r['n_human']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    m = entry["mean"]
    lines.append(f"| **weighted mean** | {m['n_human']} | " + " | ".join(_fmt(m[c]) for c in cols) + " |")
    return "\n".join(lines)
