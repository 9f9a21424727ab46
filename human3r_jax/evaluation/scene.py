"""`human3r-jax evaluate depth|pose`: the scene benchmarks end to end.

For a dataset laid out as the official preparation scripts write it, every sequence is run through the same
streaming loop as ``reconstruct`` (``reconstruct.run``: the jitted step, the official reset_interval duplicate
and pose chaining), with the evaluation's frame loader (``frames``: crop for pose, resize for depth). Each
sequence's predictions are cached atomically as ``OUT_DIR/<dataset>/<seq>.npz`` (depth = z of
``pts3d_in_self_view`` at model resolution, chained camera-to-world, focal); a re-run skips cached sequences
(an interrupted run resumes), and ``rescore`` recomputes the metrics from the cache alone. The metrics go to
``OUT_DIR/metrics.json`` (one entry per task/dataset, names and units spelled out) and a Markdown table.

Layouts under ROOT (N is the frame count of the subset):

    depth bonn, bonn_N   rgbd_bonn_<seq>/rgb_<N>/*.png, GT rgbd_bonn_<seq>/depth_<N>/*.png (bonn: N = 110)
    depth kitti          depth_selection/val_selection_cropped/image_gathered/<drive>/*.png,
                         GT depth_selection/val_selection_cropped/groundtruth_depth_gathered/<drive>/*.png
    depth sintel         training/final/<seq>/*.png (every sequence), GT training/depth/<seq>/*.dpt
    pose  tum, tum_N     <seq>/rgb_<N>/* and <seq>/groundtruth_<N>.txt for every folder <seq> (tum: N = 90)
    pose  scannet        <scene>/color_90/* and <scene>/pose_90.txt for every folder <scene>
    pose  sintel         training/final/<seq>/*.png and training/camdata_left/<seq>/*.cam (the 14 sequences)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from human3r_jax import outputs
from human3r_jax.evaluation import depth as depth_metrics
from human3r_jax.evaluation import depth_data
from human3r_jax.evaluation import pose as pose_metrics
from human3r_jax.evaluation.frames import frame_files
from human3r_jax.evaluation.runner import EvaluationError, Plan, cache_path, clean, load_cache, predict, write_entry

TASKS = ("depth", "pose")
BONN_N = tuple(range(50, 501, 50))
TUM_N = (50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
DATASETS = {
    "depth": ("bonn", *(f"bonn_{n}" for n in BONN_N), "kitti", "sintel"),
    "pose": ("tum", *(f"tum_{n}" for n in TUM_N), "scannet", "sintel"),
}
assert set(DATASETS["depth"]) | set(DATASETS["pose"]) <= set(outputs.EVALUATION_DATASETS)

DEPTH_UNITS = {
    "abs_rel": ("Abs Rel", "unitless (mean |pred−GT|/GT)"),
    "sq_rel": ("Sq Rel", "m (mean (pred−GT)²/GT)"),
    "rmse": ("RMSE", "m"),
    "log_rmse": ("Log RMSE", "unitless (RMSE of natural-log depth)"),
    "delta_1": ("δ < 1", "fraction of valid pixels"),
    "delta_1.25": ("δ < 1.25", "fraction of valid pixels"),
    "delta_1.25^2": ("δ < 1.25²", "fraction of valid pixels"),
    "delta_1.25^3": ("δ < 1.25³", "fraction of valid pixels"),
    "valid_pixels": ("valid pixels", "pixels (weight of the sequence in the mean)"),
    "scale": ("alignment scale", "unitless"),
    "shift": ("alignment shift", "m"),
}
POSE_UNITS = {
    "ate": ("ATE", "m (RMSE after Sim(3) alignment, GT scale)"),
    "rpe_trans": ("RPE trans", "m (RMSE over consecutive frames)"),
    "rpe_rot": ("RPE rot", "degrees (RMSE over consecutive frames)"),
    "num_poses": ("poses", "count (after timestamp association)"),
}


# ---------------------------------------------------------------- datasets


@dataclasses.dataclass
class Sequence_:
    name: str
    frames: list[Path]
    gt: object  # depth: list of GT files; pose: (TUM rows [N, 7], timestamps [N])


def _subset_n(dataset: str, base: str, default: int) -> int:
    return default if dataset == base else int(dataset.split("_")[1])


def _frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder")
    files = frame_files(folder)
    if not files:
        raise EvaluationError(f"{folder}: no frames (.jpg, .jpeg, .png)")
    return files


def _subfolders(folder: Path, what: str) -> list[str]:
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder ({what})")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise EvaluationError(f"{folder}: no sequence folders ({what})")
    return names


def _paired(name: str, frames: list[Path], gt: list[Path]) -> Sequence_:
    if len(frames) != len(gt):
        raise EvaluationError(
            f"{frames[0].parent}: {len(frames)} frames but {len(gt)} GT depth maps in "
            f"{gt[0].parent}; they must correspond one to one"
        )
    return Sequence_(name, frames, gt)


def list_sequences(task: str, dataset: str, root: str | Path) -> list[Sequence_]:
    """The sequences of a dataset under `root`, with their frames and GT (pose GT parsed here; depth GT files
    only listed): any missing folder or file, or malformed pose GT, is an error naming it."""
    root = Path(root)
    if task not in DATASETS:
        raise EvaluationError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if dataset not in DATASETS[task]:
        raise EvaluationError(f"unknown {task} dataset {dataset!r}; known: {', '.join(DATASETS[task])}")
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such folder (--root)")
    try:
        if task == "depth":
            return _depth_sequences(dataset, root)
        return _pose_sequences(dataset, root)
    except (depth_data.DepthDataError, pose_metrics.PoseDataError) as e:
        raise EvaluationError(str(e)) from None


def _depth_sequences(dataset: str, root: Path) -> list[Sequence_]:
    if dataset.startswith("bonn"):
        n = _subset_n(dataset, "bonn", 110)
        out = []
        for seq in depth_data.BONN_SEQUENCES:
            folder = root / f"rgbd_bonn_{seq}"
            frames = _frames(folder / f"rgb_{n}")
            out.append(_paired(seq, frames, depth_data._sorted_files(folder / f"depth_{n}", "*.png")))
        return out
    if dataset == "kitti":
        base = root / "depth_selection" / "val_selection_cropped"
        gt = depth_data.kitti_sequences(root)
        out = []
        for drive in _subfolders(base / "image_gathered", "KITTI drives"):
            if drive not in gt:
                raise EvaluationError(f"{base / 'groundtruth_depth_gathered' / drive}: no such folder")
            out.append(_paired(drive, _frames(base / "image_gathered" / drive), gt[drive]))
        return out
    # sintel: every sequence of training/final (the launcher forces full_seq), GT of the same name
    final = root / "training" / "final"
    out = []
    for seq in _subfolders(final, "MPI-Sintel training/final"):
        gt = depth_data._sorted_files(root / "training" / "depth" / seq, "*.dpt")
        out.append(_paired(seq, _frames(final / seq), gt))
    return out


def _pose_sequences(dataset: str, root: Path) -> list[Sequence_]:
    out = []
    if dataset.startswith("tum"):
        n = _subset_n(dataset, "tum", 90)
        for seq in _subfolders(root, "TUM-dynamics sequences"):
            gt_file = root / seq / f"groundtruth_{n}.txt"
            if not gt_file.is_file():
                raise EvaluationError(f"{gt_file}: no such file")
            out.append(Sequence_(seq, _frames(root / seq / f"rgb_{n}"), pose_metrics.read_tum_groundtruth(gt_file)))
        return out
    if dataset == "scannet":
        for seq in _subfolders(root, "ScanNet scenes"):
            gt_file = root / seq / "pose_90.txt"
            if not gt_file.is_file():
                raise EvaluationError(f"{gt_file}: no such file")
            out.append(Sequence_(seq, _frames(root / seq / "color_90"), pose_metrics.read_scannet_poses(gt_file)))
        return out
    for seq in depth_data.SINTEL_POSE_SEQUENCES:
        cams = root / "training" / "camdata_left" / seq
        if not cams.is_dir():
            raise EvaluationError(f"{cams}: no such folder")
        out.append(
            Sequence_(seq, _frames(root / "training" / "final" / seq), pose_metrics.read_sintel_groundtruth(cams))
        )
    return out


# ---------------------------------------------------------------- settings


def official_defaults(task: str, human3r: bool) -> dict:
    """The flags of the official evaluation launch scripts: Human3R runs TTT3R, pose with reset_interval 100, depth
    without resets, and scores depth with --align scale and metric; CUT3R is plain, depth scored with scale."""
    return {
        "reset_interval": 100 if (human3r and task == "pose") else None,
        "ttt3r": human3r,
        "align": ["scale", "metric"] if human3r else ["scale"],
    }


# ---------------------------------------------------------------- running


def _collect(seq: Sequence_):
    """What the depth and pose scores need of each frame: z of the self-view points, chained c2w, focal."""
    depth, c2w, focal, names = [], [], [], []

    def add(raw, img, res):
        depth.append(np.asarray(res["depth"], np.float32))
        c2w.append(np.asarray(res["c2w"], np.float32))
        focal.append(np.float32(res["intrinsics"][0, 0]))
        names.append(raw.name)

    def finish() -> dict:
        return {
            "depth": np.stack(depth),
            "c2w": np.stack(c2w),
            "focal": np.asarray(focal, np.float32),
            "frame_name": np.asarray(names, str),
        }

    return add, finish


def _require_eval_extra() -> None:
    """The metrics need evo (pose) and OpenCV (the official depth resize): say so before any work."""
    import importlib.util

    missing = [m for m in ("evo", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        raise EvaluationError(f"the evaluation needs {' and '.join(missing)}: pip install 'human3r-jax[eval]'")


def evaluate(
    task: str,
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    random_weights: str | None = None,
    rescore: bool = False,
    reset_interval: int | None = None,
    ttt3r: bool | None = None,
    align: Sequence[str] | None = None,
    size: int = 512,
    progress: bool = True,
    on_sequence: Callable[[str], None] | None = None,
    print_table: bool = True,
) -> dict:
    """Run (or resume) the evaluation of one dataset and write OUT_DIR/metrics.json; returns its entry.

    reset_interval / ttt3r / align: None = the official value for the model kind (`official_defaults`);
    reset_interval 0 = no resets. rescore: no model; every sequence must be cached. on_sequence(name) is called
    after each sequence's predictions are cached (a test hook)."""
    root, out = Path(root), Path(out)
    _require_eval_extra()
    seqs = list_sequences(task, dataset, root)
    if size not in (512, 224):
        raise EvaluationError(f"--size must be 512 or 224, got {size}")
    if align is not None:
        for a in align:
            if a not in depth_metrics.OFFICIAL_ALIGN:
                raise EvaluationError(f"unknown --align {a!r}; known: {', '.join(depth_metrics.OFFICIAL_ALIGN)}")

    def settings(human3r: bool) -> dict:
        defaults = official_defaults(task, human3r)
        return {
            "size": size,
            "crop": task == "pose",
            "reset_interval": defaults["reset_interval"] if reset_interval is None else (reset_interval or None),
            "ttt3r": defaults["ttt3r"] if ttt3r is None else bool(ttt3r),
        }

    plan = Plan(task, dataset, seqs, settings, _collect, guarded=[root])
    cache_dir, used = predict(
        plan,
        out,
        checkpoint=checkpoint,
        random_weights=random_weights,
        rescore=rescore,
        progress=progress,
        on_sequence=on_sequence,
    )
    aligns = list(align) if align is not None else official_defaults(task, used["model"]["human3r"])["align"]
    entry = _score(task, dataset, seqs, cache_dir, used, aligns)
    write_entry(out, entry)
    if print_table:
        print(markdown_table(entry))
    return entry


def _score(task, dataset, seqs, cache_dir, settings, aligns) -> dict:
    keys = ("depth", "c2w", "focal", "frame_name")
    caches = {s.name: load_cache(cache_path(cache_dir, s.name), keys, len(s.frames)) for s in seqs}
    entry = {"task": task, "dataset": dataset, "settings": settings, "sequences_listed": [s.name for s in seqs]}
    if task == "pose":
        per = {}
        for s in seqs:
            gt_tum, gt_t = s.gt
            per[s.name] = pose_metrics.evaluate_sequence(caches[s.name]["c2w"], gt_tum, gt_t)
        mean = pose_metrics.aggregate_sequences(per)
        entry["metrics"] = {k: {"name": n, "unit": u} for k, (n, u) in POSE_UNITS.items()}
        entry["aggregation"] = "plain mean over the sequences that did not fail"
        entry["sequences"] = {
            k: clean({**r.as_dict(), "num_poses": r.num_poses, "failed": r.failed, "reason": r.reason})
            for k, r in per.items()
        }
        entry["mean"] = clean(mean)
        return entry
    import cv2

    caps = depth_metrics.dataset_caps(dataset)
    results = {a: {} for a in aligns}
    for s in seqs:
        maps = [
            depth_data.read_sintel_dpt(p)
            if p.suffix == ".dpt"
            else depth_data.read_png_depth(p, 256.0 if dataset == "kitti" else 5000.0)
            for p in s.gt
        ]
        for p, m in zip(s.gt, maps):
            if m.shape != maps[0].shape:  # a sequence's depths are stacked, as the original does
                raise EvaluationError(
                    f"{p}: a {m.shape[1]}x{m.shape[0]} depth map; the sequence's first "
                    f"({s.gt[0].name}) is {maps[0].shape[1]}x{maps[0].shape[0]}"
                )
        gt = np.stack(maps)
        pred = np.stack(
            [cv2.resize(d, (gt.shape[2], gt.shape[1]), interpolation=cv2.INTER_CUBIC) for d in caches[s.name]["depth"]]
        )
        for a in aligns:
            results[a][s.name] = depth_metrics.evaluate_sequence(
                pred,
                gt,
                align=depth_metrics.OFFICIAL_ALIGN[a],
                max_depth=caps.max_depth,
                post_clip_max=caps.post_clip_max,
                float32_pred=gt.dtype == np.float64,
            )
    entry["metrics"] = {k: {"name": n, "unit": u} for k, (n, u) in DEPTH_UNITS.items()}
    entry["aggregation"] = "mean over sequences weighted by each sequence's valid-pixel count"
    entry["align"] = {}
    for a in aligns:
        try:
            mean = depth_metrics.aggregate_sequences(list(results[a].values()))
        except ZeroDivisionError:
            mean = dict.fromkeys(depth_metrics.METRICS)
        entry["align"][a] = {"sequences": clean(results[a]), "mean": clean(mean)}
    return entry


def _fmt(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown_table(entry: dict) -> str:
    """The metrics of one `evaluate` entry as Markdown."""
    lines = []
    if entry["task"] == "pose":
        lines += [
            f"### pose — {entry['dataset']}",
            "",
            "| sequence | poses | ATE (m) | RPE trans (m) | RPE rot (deg) |",
            "|---|---|---|---|---|",
        ]
        for k, r in entry["sequences"].items():
            note = f" (failed: {r['reason']})" if r["failed"] else ""
            lines.append(
                f"| {k}{note} | {r['num_poses']} | {_fmt(r['ate'])} | {_fmt(r['rpe_trans'])} | {_fmt(r['rpe_rot'])} |"
            )
        m = entry["mean"]
        lines.append(
            f"| **mean** ({m['num_sequences']} seq.) | | {_fmt(m['ate'])} | {_fmt(m['rpe_trans'])} | "
            f"{_fmt(m['rpe_rot'])} |"
        )
        return "\n".join(lines)
    cols = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1.25", "delta_1.25^2", "delta_1.25^3")
    head = " | ".join(f"{DEPTH_UNITS[c][0]}" + (" (m)" if c in ("sq_rel", "rmse") else "") for c in cols)
    for a, block in entry["align"].items():
        lines += [
            f"### depth — {entry['dataset']} — align {a}",
            "",
            f"| sequence | valid px | {head} |",
            "|---|---|" + "---|" * len(cols),
        ]
        for k, r in block["sequences"].items():
            lines.append(f"| {k} | {r['valid_pixels']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
        lines.append("| **weighted mean** | | " + " | ".join(_fmt(block["mean"][c]) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()
