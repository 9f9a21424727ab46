"""`human3r-jax evaluate depth|pose`: the scene benchmarks end to end (spec ``evaluation.md`` §3, §4, §5).

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
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from human3r_jax import export, outputs
from human3r_jax.evaluation import depth as depth_metrics
from human3r_jax.evaluation import depth_data
from human3r_jax.evaluation import pose as pose_metrics
from human3r_jax.evaluation.frames import frame_files, load_eval_frame

TASKS = ("depth", "pose")
BONN_N = tuple(range(50, 501, 50))
TUM_N = (50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
DATASETS = {
    "depth": ("bonn", *(f"bonn_{n}" for n in BONN_N), "kitti", "sintel"),
    "pose": ("tum", *(f"tum_{n}" for n in TUM_N), "scannet", "sintel"),
}
assert set(DATASETS["depth"]) | set(DATASETS["pose"]) == set(outputs.EVALUATION_DATASETS)
SCHEMA_VERSION = 1

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


class EvaluationError(ValueError):
    """A missing or malformed dataset folder, frame list, cache or setting; the message names it."""


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
        raise EvaluationError(f"{frames[0].parent}: {len(frames)} frames but {len(gt)} GT depth maps in "
                              f"{gt[0].parent}; they must correspond one to one")
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
        out.append(Sequence_(seq, _frames(root / "training" / "final" / seq),
                             pose_metrics.read_sintel_groundtruth(cams)))
    return out


# ---------------------------------------------------------------- settings and model identity


def checkpoint_digest(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint: the .pth file, or a converted folder's config.json and params/ files (each
    file's relative path and bytes, in sorted order)."""
    path = Path(checkpoint)
    h = hashlib.sha256()
    if path.is_file():
        files = [(path.name, path)]
    else:
        files = [("config.json", path / "config.json")]
        params = path / "params"
        if params.is_dir():
            files += sorted((str(p.relative_to(path)), p) for p in params.rglob("*") if p.is_file())
    for rel, p in files:
        if path.is_dir():
            h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_human3r(checkpoint: str | Path | None, random_weights: str | None, model=None) -> bool:
    from human3r_jax.config import HUMAN3R_PRESETS, Human3rConfig

    if model is not None:
        return model.humans
    if random_weights is not None:
        return random_weights in HUMAN3R_PRESETS
    from human3r_jax import checkpoint as ckpt

    cfg, _ = ckpt.read_config(checkpoint)
    return isinstance(cfg, Human3rConfig)


def official_defaults(task: str, human3r: bool) -> dict:
    """The flags of the official scripts (§5): Human3R runs TTT3R, pose with reset_interval 100, depth
    without resets, and scores depth with --align scale and metric; CUT3R is plain, depth scored with scale."""
    return {"reset_interval": 100 if (human3r and task == "pose") else None, "ttt3r": human3r,
            "align": ["scale", "metric"] if human3r else ["scale"]}


# ---------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class _Raw:
    index: int
    name: str
    path: Path
    time: float

    @property
    def image(self):  # used by reconstruct's size-mismatch message only
        from human3r_jax.data.images import open_image

        return open_image(self.path)


class _EvalSource:
    """The frames of one sequence for `reconstruct.run` (decoded by the eval loader through `prep`)."""

    kind, fps, subsample = "images", None, 1

    def __init__(self, seq: Sequence_):
        self.path = seq.frames[0].parent
        self.files = seq.frames

    def __len__(self):
        return len(self.files)

    def __iter__(self):
        for i, f in enumerate(self.files):
            yield _Raw(i, f.name, f, float(i))


class _Collect:
    """A `SequenceWriter`-like sink keeping what the evaluation caches."""

    def __init__(self, bar):
        self.depth, self.c2w, self.focal, self.names, self.bar = [], [], [], [], bar

    def add(self, raw, img, res):
        self.depth.append(np.asarray(res["depth"], np.float32))
        self.c2w.append(np.asarray(res["c2w"], np.float32))
        self.focal.append(np.float32(res["intrinsics"][0, 0]))
        self.names.append(raw.name)
        if self.bar is not None:
            self.bar.update(1)


def _run_sequence(model, seq: Sequence_, settings: dict, bar) -> dict:
    from human3r_jax.data.images import ImageError
    from human3r_jax.reconstruct import Settings, run

    size, crop = settings["size"], settings["crop"]

    def prep(raw):
        try:
            return load_eval_frame(raw.path, size, crop)
        except ImageError as e:
            msg = str(e)
            raise EvaluationError(msg if str(raw.path) in msg else f"{raw.path}: {msg}") from None

    sink = _Collect(bar)
    run(model, [_EvalSource(seq)], [sink],
        Settings(size=size, reset_interval=settings["reset_interval"], ttt3r=settings["ttt3r"]),
        progress=False, prep=prep)
    return {"depth": np.stack(sink.depth), "c2w": np.stack(sink.c2w), "focal": np.asarray(sink.focal, np.float32),
            "frame_name": np.asarray(sink.names, str)}


def _load_cache(path: Path, n_frames: int) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            cache = {k: z[k] for k in ("depth", "c2w", "focal", "frame_name")}
    except (OSError, ValueError, KeyError) as e:
        raise EvaluationError(f"{path}: unreadable prediction cache ({e}); delete it to recompute") from None
    if len(cache["c2w"]) != n_frames:
        raise EvaluationError(f"{path}: caches {len(cache['c2w'])} frames, the sequence has {n_frames}; "
                              "the data changed since: evaluate into another --out")
    return cache


def _prepare_out(out: Path, guarded: Sequence) -> None:
    real = out.resolve()
    for g in guarded:
        if g is not None and Path(g).resolve() in real.parents:
            raise EvaluationError(f"{out}: the output folder lies inside the input {g}; choose another --out")
    outputs.check_output(out, "evaluation", True, guarded)  # absent, empty, or an evaluation of ours (resumed)
    out.mkdir(parents=True, exist_ok=True)
    outputs.mark(out, "evaluation")


def _require_eval_extra() -> None:
    """The metrics need evo (pose) and OpenCV (the official depth resize): say so before any work."""
    import importlib.util

    missing = [m for m in ("evo", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        raise EvaluationError(f"the evaluation needs {' and '.join(missing)}: pip install 'human3r-jax[eval]'")


def evaluate(task: str, dataset: str, root: str | Path, out: str | Path, *, checkpoint: str | Path | None = None,
             random_weights: str | None = None, rescore: bool = False, reset_interval: int | None = None,
             ttt3r: bool | None = None, align: Sequence[str] | None = None, size: int = 512,
             progress: bool = True, on_sequence: Callable[[str], None] | None = None,
             print_table: bool = True) -> dict:
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
    _prepare_out(out, [root, checkpoint])
    cache_dir = out / dataset
    settings_file = cache_dir / "settings.json"
    previous = json.loads(settings_file.read_text()) if settings_file.is_file() else None
    if previous is not None and previous.get("task") != task:
        raise EvaluationError(f"{cache_dir}: holds {previous.get('task')} predictions of {dataset}; evaluate "
                              f"{task} into another --out")

    model = None
    if rescore:
        if previous is None:
            raise EvaluationError(f"{cache_dir}: no cached predictions to rescore (run without --rescore first)")
        settings = previous
        human3r = settings["model"]["human3r"]
    else:
        if checkpoint is None and random_weights is None:
            from human3r_jax.reconstruct import CHECKPOINT_HELP

            raise EvaluationError(f"no model given: {CHECKPOINT_HELP}")
        if checkpoint is not None and Path(checkpoint).is_file():
            from human3r_jax.reconstruct import load_model

            model = load_model(checkpoint, None)  # an official .pth: its kind is known once converted
        if checkpoint is not None and not Path(checkpoint).exists():
            raise EvaluationError(f"{checkpoint}: no such checkpoint file or folder")
        human3r = is_human3r(checkpoint, random_weights, model)
        defaults = official_defaults(task, human3r)
        ri = defaults["reset_interval"] if reset_interval is None else (reset_interval or None)
        settings = {
            "schema_version": SCHEMA_VERSION, "task": task, "dataset": dataset, "size": size,
            "crop": task == "pose", "reset_interval": ri,
            "ttt3r": defaults["ttt3r"] if ttt3r is None else bool(ttt3r),
            "model": {"source": str(checkpoint) if checkpoint is not None else f"random weights ({random_weights})",
                      "human3r": human3r, "random_weights": random_weights,
                      "sha256": checkpoint_digest(checkpoint) if checkpoint is not None else None},
        }
        if previous is not None:
            if previous != settings:
                raise EvaluationError(f"{cache_dir}: its cached predictions were made with other settings or "
                                      f"another model ({_diff(previous, settings)}); evaluate into another --out "
                                      "or pass --rescore")
        cache_dir.mkdir(exist_ok=True)
        export.save_json(settings_file, settings)
    aligns = list(align) if align is not None else official_defaults(task, human3r)["align"]

    # predictions: each missing sequence run and cached
    todo = [s for s in seqs if not (cache_dir / f"{s.name}.npz").is_file()]
    if rescore and todo:
        raise EvaluationError(f"{cache_dir / (todo[0].name + '.npz')}: not cached; --rescore needs every "
                              "sequence's predictions (run without --rescore to compute them)")
    if todo:
        if model is None:
            from human3r_jax.reconstruct import load_model

            model = load_model(checkpoint, random_weights)
        if model.random_weights:
            print(f"human3r-jax evaluate: RANDOM WEIGHTS ({random_weights}): this exercises the pipeline; the "
                  "metrics are meaningless.", file=sys.stderr)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(s.frames) for s in todo), unit="frame", desc=f"{task} {dataset}",
                       dynamic_ncols=True)
        try:
            for s in todo:
                if bar is not None:
                    bar.set_postfix(seq=s.name)
                pred = _run_sequence(model, s, settings, bar)
                export.save_npz(cache_dir / f"{s.name}.npz", pred)
                if on_sequence is not None:
                    on_sequence(s.name)
        finally:
            if bar is not None:
                bar.close()

    entry = _score(task, dataset, seqs, cache_dir, settings, aligns)
    metrics_file = out / "metrics.json"
    doc = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    doc.setdefault("schema_version", SCHEMA_VERSION)
    doc.setdefault("results", {})[f"{task}/{dataset}"] = entry
    export.save_json(metrics_file, doc)
    if print_table:
        print(markdown_table(entry))
    return entry


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} then {b.get(k)!r}" for k in keys)


def _clean(x):
    """JSON-safe floats (NaN → null)."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _score(task, dataset, seqs, cache_dir, settings, aligns) -> dict:
    caches = {s.name: _load_cache(cache_dir / f"{s.name}.npz", len(s.frames)) for s in seqs}
    entry = {"task": task, "dataset": dataset, "settings": settings, "sequences_listed": [s.name for s in seqs]}
    if task == "pose":
        per = {}
        for s in seqs:
            gt_tum, gt_t = s.gt
            per[s.name] = pose_metrics.evaluate_sequence(caches[s.name]["c2w"], gt_tum, gt_t)
        mean = pose_metrics.aggregate_sequences(per)
        entry["metrics"] = {k: {"name": n, "unit": u} for k, (n, u) in POSE_UNITS.items()}
        entry["aggregation"] = "plain mean over the sequences that did not fail"
        entry["sequences"] = {k: _clean({**r.as_dict(), "num_poses": r.num_poses, "failed": r.failed,
                                         "reason": r.reason}) for k, r in per.items()}
        entry["mean"] = _clean(mean)
        return entry
    import cv2

    caps = depth_metrics.dataset_caps(dataset)
    results = {a: {} for a in aligns}
    for s in seqs:
        gt = np.stack([depth_data.read_sintel_dpt(p) if p.suffix == ".dpt"
                       else depth_data.read_png_depth(p, 256.0 if dataset == "kitti" else 5000.0) for p in s.gt])
        pred = np.stack([cv2.resize(d, (gt.shape[2], gt.shape[1]), interpolation=cv2.INTER_CUBIC)
                         for d in caches[s.name]["depth"]])
        for a in aligns:
            results[a][s.name] = depth_metrics.evaluate_sequence(
                pred, gt, align=depth_metrics.OFFICIAL_ALIGN[a], max_depth=caps.max_depth,
                post_clip_max=caps.post_clip_max, float32_pred=gt.dtype == np.float64)
    entry["metrics"] = {k: {"name": n, "unit": u} for k, (n, u) in DEPTH_UNITS.items()}
    entry["aggregation"] = "mean over sequences weighted by each sequence's valid-pixel count"
    entry["align"] = {}
    for a in aligns:
        try:
            mean = depth_metrics.aggregate_sequences(list(results[a].values()))
        except ZeroDivisionError:
            mean = {k: None for k in depth_metrics.METRICS}
        entry["align"][a] = {"sequences": _clean(results[a]), "mean": _clean(mean)}
    return entry


def _fmt(v, digits=4):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown_table(entry: dict) -> str:
    """The metrics of one `evaluate` entry as Markdown."""
    lines = []
    if entry["task"] == "pose":
        lines += [f"### pose — {entry['dataset']}", "",
                  "| sequence | poses | ATE (m) | RPE trans (m) | RPE rot (deg) |", "|---|---|---|---|---|"]
        for k, r in entry["sequences"].items():
            note = f" (failed: {r['reason']})" if r["failed"] else ""
            lines.append(f"| {k}{note} | {r['num_poses']} | {_fmt(r['ate'])} | {_fmt(r['rpe_trans'])} | "
                         f"{_fmt(r['rpe_rot'])} |")
        m = entry["mean"]
        lines.append(f"| **mean** ({m['num_sequences']} seq.) | | {_fmt(m['ate'])} | {_fmt(m['rpe_trans'])} | "
                     f"{_fmt(m['rpe_rot'])} |")
        return "\n".join(lines)
    cols = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1.25", "delta_1.25^2", "delta_1.25^3")
    head = " | ".join(f"{DEPTH_UNITS[c][0]}" + (" (m)" if c in ("sq_rel", "rmse") else "") for c in cols)
    for a, block in entry["align"].items():
        lines += [f"### depth — {entry['dataset']} — align {a}", "", f"| sequence | valid px | {head} |",
                  "|---|---|" + "---|" * len(cols)]
        for k, r in block["sequences"].items():
            lines.append(f"| {k} | {r['valid_pixels']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
        lines.append("| **weighted mean** | | " + " | ".join(_fmt(block["mean"][c]) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()
