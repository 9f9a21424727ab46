"""What every `human3r-jax evaluate` task shares: the output folder, the settings that key the cached
predictions, running each missing sequence once through the model, and `metrics.json`.

OUT_DIR (a marked `evaluation` output) holds one folder per dataset with `settings.json` (the run settings
and the model's identity) and one `<seq>.npz` of predictions per sequence, written atomically as each
sequence finishes; a re-run skips cached sequences (an interrupted run resumes), refuses cached predictions
made with other settings or another model, and `rescore` needs no model at all. Each task scores from the
cache and adds its entry to `OUT_DIR/metrics.json` under "<task>/<dataset>".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from human3r_jax import distributed, export, outputs
from human3r_jax.errors import Human3rError

SCHEMA_VERSION = 1


class EvaluationError(Human3rError):
    """A missing or malformed dataset folder, frame list, cache or setting; the message names it."""


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


def prepare_out(out: Path, guarded: Sequence) -> None:
    """OUT_DIR absent, empty, or an evaluation of ours (resumed); never inside an input."""
    real = out.resolve()
    for g in guarded:
        if g is not None and Path(g).resolve() in real.parents:
            raise EvaluationError(f"{out}: the output folder lies inside the input {g}; choose another --out")
    outputs.check_output(out, "evaluation", True, guarded)
    out.mkdir(parents=True, exist_ok=True)
    outputs.mark(out, "evaluation")


@dataclasses.dataclass
class Plan:
    """One dataset of one task, as the task describes it to `predict`."""

    task: str
    dataset: str
    sequences: list  # objects with .name (str) and .frames (list of paths)
    settings: Callable[[bool], dict]  # human3r → the run settings (size, crop, reset_interval, ttt3r, …)
    collect: Callable[[Any], tuple[Callable, Callable[[], dict]]]  # sequence → (add(raw, img, res), finish() →
    #                                                               the arrays to cache)
    guarded: Sequence = ()  # inputs the output folder must not be or lie in


def cache_path(cache_dir: Path, name: str) -> Path:
    """`<seq>.npz` (a sequence name with slashes, as EMDB's and RICH's, is flattened with '__')."""
    return cache_dir / (name.replace("/", "__") + ".npz")


def predict(
    plan: Plan,
    out: Path,
    *,
    checkpoint: str | Path | None = None,
    random_weights: str | None = None,
    rescore: bool = False,
    progress: bool = True,
    on_sequence: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Make sure every sequence of `plan` has cached predictions under OUT_DIR/<dataset>/ (running the model
    on the missing ones; in a multi-process run each process its share, then all wait for the others);
    returns (that folder, the settings). on_sequence(name) runs after each sequence is
    cached (a test hook)."""
    prepare_out(out, [*plan.guarded, checkpoint])
    cache_dir = out / plan.dataset
    settings_file = cache_dir / "settings.json"
    previous = json.loads(settings_file.read_text()) if settings_file.is_file() else None
    if previous is not None and previous.get("task") != plan.task:
        raise EvaluationError(
            f"{cache_dir}: holds {previous.get('task')} predictions of {plan.dataset}; evaluate "
            f"{plan.task} into another --out"
        )
    model = None
    if rescore:
        if previous is None:
            raise EvaluationError(f"{cache_dir}: no cached predictions to rescore (run without --rescore first)")
        settings = previous
    else:
        if checkpoint is None and random_weights is None:
            from human3r_jax.reconstruct import CHECKPOINT_HELP

            raise EvaluationError(f"no model given: {CHECKPOINT_HELP}")
        if checkpoint is not None and not Path(checkpoint).exists():
            raise EvaluationError(f"{checkpoint}: no such checkpoint file or folder")
        if checkpoint is not None and Path(checkpoint).is_file():
            from human3r_jax.reconstruct import load_model

            model = load_model(checkpoint, None)  # an official .pth: its kind is known once converted
        human3r = is_human3r(checkpoint, random_weights, model)
        settings = {
            "schema_version": SCHEMA_VERSION,
            "task": plan.task,
            "dataset": plan.dataset,
            **plan.settings(human3r),
            "model": {
                "source": str(checkpoint) if checkpoint is not None else f"random weights ({random_weights})",
                "human3r": human3r,
                "random_weights": random_weights,
                "sha256": checkpoint_digest(checkpoint) if checkpoint is not None else None,
            },
        }
        if previous is not None and previous != settings:
            raise EvaluationError(
                f"{cache_dir}: its cached predictions were made with other settings or another "
                f"model ({_diff(previous, settings)}); evaluate into another --out or pass "
                "--rescore"
            )
        cache_dir.mkdir(exist_ok=True)
        if distributed.is_main():
            export.save_json(settings_file, settings)

    todo = [s for s in plan.sequences if not cache_path(cache_dir, s.name).is_file()]
    if rescore and todo:
        raise EvaluationError(
            f"{cache_path(cache_dir, todo[0].name)}: not cached; --rescore needs every "
            "sequence's predictions (run without --rescore to compute them)"
        )
    # A multi-process run: each process predicts its share, then all wait until every sequence is cached.
    todo = todo[jax.process_index() :: jax.process_count()]
    if todo:
        _run_sequences(plan, todo, cache_dir, settings, model, checkpoint, random_weights, progress, on_sequence)
    distributed.barrier(f"evaluate {plan.task} {plan.dataset}")
    return cache_dir, settings


def _run_sequences(plan, todo, cache_dir, settings, model, checkpoint, random_weights, progress, on_sequence):
    if model is None:
        from human3r_jax.reconstruct import load_model

        model = load_model(checkpoint, random_weights)
    if model.random_weights:
        print(
            f"human3r-jax evaluate: RANDOM WEIGHTS ({random_weights}): this exercises the pipeline; the "
            "metrics are meaningless.",
            file=sys.stderr,
        )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(len(s.frames) for s in todo), unit="frame", desc=f"{plan.task} {plan.dataset}", dynamic_ncols=True
        )
    try:
        for group in _batches(todo, settings, _local_device_count()):
            if bar is not None:
                bar.set_postfix(seq=",".join(s.name for s in group))
            sinks = [plan.collect(s) for s in group]
            adds = [_counted(add, bar) for add, _ in sinks]
            run_frames(model, [s.frames for s in group], settings, adds)
            for s, (_, finish) in zip(group, sinks):
                export.save_npz(cache_path(cache_dir, s.name), finish())
                if on_sequence is not None:
                    on_sequence(s.name)
    finally:
        if bar is not None:
            bar.close()


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


class _Frames:
    """The frames of one sequence as a `reconstruct.run` source (decoded by the eval loader through `prep`)."""

    kind, fps, subsample = "images", None, 1

    def __init__(self, files: Sequence[Path]):
        self.path = Path(files[0]).parent
        self.files = list(files)

    def __len__(self):
        return len(self.files)

    @property
    def length(self) -> int:
        return len(self.files)

    def __iter__(self):
        for i, f in enumerate(self.files):
            yield _Raw(i, Path(f).name, Path(f), float(i))


class _Sink:
    def __init__(self, add):
        self.add = add


def _counted(add, bar):
    def counted(raw, img, res):
        add(raw, img, res)
        if bar is not None:
            bar.update(1)

    return counted


def _local_device_count() -> int:
    """How many sequences run at once: one per local device."""
    return len(jax.local_devices())


def _batches(seqs: list, settings: dict, n: int) -> list[list]:
    """Sequences in runs of at most n (the local devices) that share a model resolution, in their order."""
    if n <= 1:
        return [[s] for s in seqs]
    from human3r_jax.data.images import open_image
    from human3r_jax.evaluation.frames import eval_model_size

    by_size: dict[tuple, list] = {}
    for s in seqs:
        by_size.setdefault(eval_model_size(*open_image(s.frames[0]).size, settings["size"]), []).append(s)
    return [g[i : i + n] for g in by_size.values() for i in range(0, len(g), n)]


def run_frames(
    model, frames: Sequence[Sequence[Path]], settings: dict, adds: Sequence[Callable[[Any, np.ndarray, dict], None]]
) -> None:
    """Sequences of one model resolution through `reconstruct.run` together (the batch axis spread over the
    local devices; the jitted step, the official reset duplicates and pose chaining) with the evaluation's frame
    loader (settings: size, crop, reset_interval, ttt3r); `adds[j](raw, img, res)` gets sequence j's frames."""
    from human3r_jax.data.images import ImageError
    from human3r_jax.evaluation.frames import load_eval_frame
    from human3r_jax.reconstruct import Settings, run

    size, crop = settings["size"], settings["crop"]

    def prep(raw):
        try:
            return load_eval_frame(raw.path, size, crop)
        except ImageError as e:
            msg = str(e)
            raise EvaluationError(msg if str(raw.path) in msg else f"{raw.path}: {msg}") from None

    run(
        model,
        [_Frames(f) for f in frames],
        [_Sink(a) for a in adds],
        Settings(size=size, reset_interval=settings["reset_interval"], ttt3r=settings["ttt3r"]),
        progress=False,
        prep=prep,
    )


def load_cache(path: Path, keys: Sequence[str], n_frames: int) -> dict:
    """The cached arrays `keys` of one sequence; its frame count (the length of `frame_name`) must match."""
    try:
        with np.load(path, allow_pickle=False) as z:
            cache = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError) as e:
        raise EvaluationError(f"{path}: unreadable prediction cache ({e}); delete it to recompute") from None
    if len(cache["frame_name"]) != n_frames:
        raise EvaluationError(
            f"{path}: caches {len(cache['frame_name'])} frames, the sequence has {n_frames}; "
            "the data changed since: evaluate into another --out"
        )
    return cache


def write_entry(out: Path, entry: dict) -> None:
    """Add (or replace) the entry "<task>/<dataset>" of OUT_DIR/metrics.json (the main process only)."""
    if not distributed.is_main():
        return
    metrics_file = out / "metrics.json"
    doc = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    doc.setdefault("schema_version", SCHEMA_VERSION)
    doc.setdefault("results", {})[f"{entry['task']}/{entry['dataset']}"] = entry
    export.save_json(metrics_file, doc)


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} then {b.get(k)!r}" for k in keys)


def clean(x):
    """JSON-safe values (NaN → null, numpy scalars → Python)."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
