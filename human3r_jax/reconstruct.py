"""Reconstruct videos or image folders: cameras, a dense scene and everyone's SMPL-X bodies.

Frames are decoded and preprocessed by a reader thread while the jitted step runs (compiled once per
resolution); results are written as each frame completes, and the whole-sequence exports are
assembled from those files at the end, so host memory does not grow with the length of the input.
Several inputs of the same resolution run as one batch, split over the available devices.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax import export, outputs, runtime
from human3r_jax.config import Human3rConfig, preset
from human3r_jax.data.images import ImageError, preprocess
from human3r_jax.data.video import FrameSource, InputError
from human3r_jax.geometry import pose_to_c2w
from human3r_jax.models import state_update as su
from human3r_jax.models.cut3r import Frame, StepOptions

CHECKPOINT_HELP = (
    "get an official checkpoint (Hugging Face hub, faneggg/human3r: human3r_896L.pth, human3r_672S.pth, …; "
    "CUT3R: cut3r_512_dpt_4_64.pth from the CUT3R release), convert it once with "
    "`human3r-jax convert FILE.pth DIR` and pass --checkpoint DIR (a .pth also works, converted on the fly); "
    "or try the pipeline with --random-weights (meaningless output)")


@dataclasses.dataclass(frozen=True)
class Settings:
    size: int = 512                    # 512 (long side) or 224 (square crop), as the official load_images
    reset_interval: int | None = None  # official reset_interval (duplicate frame after each reset)
    ttt3r: bool = False
    subsample: int = 1
    max_frames: int | None = None
    conf_threshold: float = 1.5        # points kept in scene.glb (the demo's vis_threshold)
    glb_frame: int | None = None       # frame whose bodies go into scene.glb (default: last with people)
    points_per_frame: int = 5000
    max_points: int = 1_000_000
    state_update: su.Rule | None = None  # a state-update rule of your own (models/state_update.py); overrides ttt3r


@dataclasses.dataclass
class LoadedModel:
    cfg: object
    graphdef: object
    params: object
    random_weights: bool
    source: str

    @property
    def humans(self) -> bool:
        return isinstance(self.cfg, Human3rConfig)


def load_model(checkpoint: str | Path | None = None, random_weights: str | None = None,
               max_humans: int | None = None) -> LoadedModel:
    """A converted checkpoint directory, an official .pth (converted in memory), or random weights."""
    if checkpoint is None and random_weights is None:
        raise InputError(f"no model given: {CHECKPOINT_HELP}")
    if random_weights is not None:
        cfg = preset(random_weights)
        params, source = None, f"random weights ({random_weights})"
    else:
        path = Path(checkpoint)
        if path.is_dir():
            cfg, _ = ckpt.read_config(path)
            params = None
        elif path.is_file():  # an official checkpoint (.pth, .pt, …): converted in memory
            from human3r_jax.converters.convert import convert_file

            cfg, params, _ = convert_file(path)
        else:
            raise InputError(f"{path}: no such checkpoint file or folder; {CHECKPOINT_HELP}")
        source = str(path)
    if max_humans is not None:
        if not isinstance(cfg, Human3rConfig):
            raise InputError("--max-humans applies to Human3R checkpoints; this one is CUT3R (no humans)")
        cfg = dataclasses.replace(cfg, max_humans=max_humans)
    model = ckpt.abstract_model(cfg)
    if random_weights is not None:
        graphdef, state = ckpt.params_into(model, ckpt.random_params(model, seed=0, as_jax=True))
    elif params is None:
        _, graphdef, state = ckpt.load(checkpoint, max_humans=max_humans)
    else:
        graphdef, state = ckpt.params_into(model, params)
    return LoadedModel(cfg, graphdef, state, random_weights is not None, source)


# ---------------------------------------------------------------- reading


class _Reader:
    """Decodes and preprocesses one source in a thread, `depth` frames ahead of the model."""

    _END = object()

    def __init__(self, source: FrameSource, size: int, depth: int = 4, prep: Callable | None = None):
        self.source, self.size = source, size
        self.prep = prep  # raw frame → model input; default: the demo's `preprocess`
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            shape = None
            for raw in self.source:
                img = self.prep(raw) if self.prep is not None else preprocess_frame(self.source, raw, self.size)
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise InputError(
                        f"{self.source.path}: {raw.name} is {raw.image.size[0]}x{raw.image.size[1]} and gives a "
                        f"{img.shape[1]}x{img.shape[0]} model input, the first frame {shape[1]}x{shape[0]}: the "
                        "frames of one sequence must share a size (resize them, or split the folder)")
                while not self.stop.is_set():
                    try:
                        self.q.put((raw, img), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
            self.q.put(self._END)
        except BaseException as e:  # handed to the consumer, which raises it
            self.q.put(e)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()


def preprocess_frame(source: FrameSource, raw, size: int) -> np.ndarray:
    """`preprocess` of one frame; an unusable frame is an InputError naming it."""
    try:
        return preprocess(raw.image, size)
    except ImageError as e:
        where = source.path / raw.name if source.kind == "images" else f"{source.path} ({raw.name})"
        raise InputError(f"{where}: {e}") from None


def first_frame_size(source: FrameSource, size: int) -> tuple[int, int]:
    """Model input (W, H) of a source, from its first frame (checked to be usable, so that a bad
    input is refused before any output is written)."""
    for raw in source:
        h, w = preprocess_frame(source, raw, size).shape[:2]
        return w, h
    raise InputError(f"{source.path}: no frames")


# ---------------------------------------------------------------- writing


class SequenceWriter:
    """Writes one sequence's per-frame files and, at `close`, its whole-sequence exports."""

    def __init__(self, out_dir: Path, model: LoadedModel, settings: Settings, source: FrameSource, smplx):
        self.out, self.model, self.settings, self.source, self.smplx = Path(out_dir), model, settings, source, smplx
        (self.out / "frames").mkdir(parents=True, exist_ok=True)
        outputs.mark(self.out, "reconstruction")
        self.names, self.times, self.indices, self.c2w, self.k = [], [], [], [], []
        self.points = np.zeros((0, 3), np.float32)
        self.colours = np.zeros((0, 3), np.uint8)
        self.bodies = None  # (frame number, verts [n, V, 3], ids [n]) for scene.glb
        self.hw = None
        # meta.json from the start: a folder never looks complete (complete=true) before it is
        export.save_json(self.out / "meta.json", self._meta(False, None, {}, "running"))

    def add(self, raw, img: np.ndarray, res: dict) -> None:
        """One frame's results (numpy, batch axis removed)."""
        n = len(self.names)
        self.hw = img.shape[:2]
        frame = {k: res[k] for k in ("c2w", "intrinsics", "depth", "conf", "pts3d_world")}
        frame["image"] = ((img * 0.5 + 0.5) * 255).round().clip(0, 255).astype(np.uint8)
        if self.model.humans:
            valid = res["smpl_valid"]
            for k in ("smpl_id", "smpl_score", "smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl"):
                frame[k] = res[k][valid]
            frame["n_detected"] = res["n_detected"]
            if "smpl_verts_world" in res:
                frame["smpl_verts_world"] = res["smpl_verts_world"][valid]
                want = self.settings.glb_frame
                if (want is None and valid.any()) or want == n:
                    self.bodies = (n, frame["smpl_verts_world"], frame["smpl_id"])
        export.save_npz(self.out / "frames" / f"{n:06d}.npz", frame)
        self.names.append(raw.name)
        self.times.append(raw.time)
        self.indices.append(raw.index)
        self.c2w.append(res["c2w"])
        self.k.append(res["intrinsics"])
        self._keep_points(res["pts3d_world"], res["conf"], frame["image"])

    def _keep_points(self, pts, conf, rgb):
        keep = conf > self.settings.conf_threshold
        p, c = pts[keep], rgb[keep]
        if len(p) > self.settings.points_per_frame:
            sel = np.linspace(0, len(p) - 1, self.settings.points_per_frame).astype(int)
            p, c = p[sel], c[sel]
        self.points = np.concatenate([self.points, p.astype(np.float32)])
        self.colours = np.concatenate([self.colours, c])
        if len(self.points) > self.settings.max_points:  # bounded: thin the whole cloud by half
            self.points, self.colours = self.points[::2], self.colours[::2]

    def close(self, complete: bool, error: str | None, timing: dict) -> None:
        """The whole-sequence files, then meta.json last (an interruption in between leaves the
        meta.json that says the folder is incomplete)."""
        f = len(self.names)
        summary = {"frame_index": np.asarray(self.indices, np.int64), "frame_name": np.asarray(self.names, str),
                   "time": np.asarray(self.times, np.float64),
                   "c2w": np.asarray(self.c2w, np.float32).reshape(f, 4, 4),
                   "intrinsics": np.asarray(self.k, np.float32).reshape(f, 3, 3),
                   "image_size": np.asarray(self.hw or (0, 0), np.int64)}
        if self.model.humans:
            summary.update(self._human_summary(f))
        export.save_npz(self.out / "reconstruction.npz", summary)
        if self.smplx is not None:
            np.save(self.out / "smplx_faces.npy", np.asarray(self.smplx.faces))
        if f:
            export.save_tum(self.out / "trajectory.tum", summary["time"], summary["c2w"])
            meshes = []
            if self.bodies is not None:
                _, verts, ids = self.bodies
                meshes = [(v, np.asarray(self.smplx.faces), export.track_colour(i)) for v, i in zip(verts, ids)]
            cams = [(c, k, self.hw) for c, k in zip(summary["c2w"], summary["intrinsics"])]
            export.save_glb(self.out / "scene.glb", self.points, self.colours, cams, meshes)
        export.save_json(self.out / "meta.json", self._meta(complete, error, timing,
                                                            "complete" if complete else "stopped"))

    def _meta(self, complete: bool, error: str | None, timing: dict, state: str) -> dict:
        return {
            "schema_version": export.SCHEMA_VERSION, "complete": complete, "state": state, "error": error,
            "frames": len(self.names), "input": str(self.source.path), "input_kind": self.source.kind,
            "input_fps": self.source.fps, "settings": dataclasses.asdict(self.settings), "model": self.model.source,
            "model_config": ckpt.config_to_json(self.model.cfg),
            "random_weights": self.model.random_weights,
            "note": "RANDOM WEIGHTS: the output is meaningless" if self.model.random_weights else None,
            "smplx": self.smplx is not None, "glb_bodies_frame": None if self.bodies is None else self.bodies[0],
            "timing": timing, "files": {"frames": export.FRAME_KEYS, "reconstruction.npz": export.SUMMARY_KEYS},
        }

    def _human_summary(self, f: int) -> dict:
        """[F, S, …] arrays gathered back from the per-frame files (nothing kept in memory meanwhile)."""
        s = self.model.cfg.max_humans
        out = {"smpl_valid": np.zeros((f, s), bool), "smpl_id": np.full((f, s), -1, np.int64),
               "smpl_score": np.zeros((f, s), np.float32), "smpl_rotmat": np.zeros((f, s, 53, 3, 3), np.float32),
               "smpl_shape": np.zeros((f, s, 10), np.float32), "smpl_expression": np.zeros((f, s, 10), np.float32),
               "smpl_transl": np.zeros((f, s, 3), np.float32), "smpl_transl_world": np.zeros((f, s, 3), np.float32),
               "n_detected": np.zeros(f, np.int64)}
        for i in range(f):
            with np.load(self.out / "frames" / f"{i:06d}.npz") as z:
                n = len(z["smpl_id"])
                out["smpl_valid"][i, :n] = True
                for k in ("smpl_id", "smpl_score", "smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl"):
                    out[k][i, :n] = z[k]
                out["n_detected"][i] = z["n_detected"]
                c2w = z["c2w"]
                out["smpl_transl_world"][i, :n] = z["smpl_transl"] @ c2w[:3, :3].T + c2w[:3, 3]
        return out


# ---------------------------------------------------------------- running


@jax.jit
def _frame_geometry(pose, pts_self, base):
    """Chained c2w, focal and world points of one batch of frames (base: [B, 4, 4] segment bases)."""
    raw = pose_to_c2w(pose)
    c2w = base @ raw
    focal = runtime.estimate_focal(pts_self)
    world = jnp.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], pts_self) + c2w[:, None, None, :3, 3]
    return raw, c2w, focal, world


@jax.jit
def _bodies_world(smplx, out, c2w):
    """World-frame SMPL-X vertices of every slot [B, S, V, 3]."""
    from human3r_jax.models.smplx import bodies_in_camera, to_world

    b, s = out["smpl_valid"].shape
    flat = lambda k: out[k].reshape((b * s,) + out[k].shape[2:])
    cam = bodies_in_camera(smplx, flat("smpl_shape"), flat("smpl_expression"), flat("smpl_rotmat"), flat("smpl_transl"))
    world = to_world(cam, jnp.repeat(c2w, s, axis=0))
    return world.vertices.reshape(b, s, -1, 3)

# What a frame's files need from the step's outputs (the rest stays on the device).
_FETCHED = ("pts3d_in_self_view", "conf_self", "smpl_valid", "smpl_id", "smpl_score", "smpl_rotmat", "smpl_shape",
            "smpl_expression", "smpl_transl", "n_detected")


def _mesh_and_sharding(batch: int):
    """Split the batch over the local devices when it divides evenly (else one device)."""
    devices = jax.devices()
    n = max(d for d in range(1, len(devices) + 1) if batch % d == 0)
    if n == 1:
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))


def run(model: LoadedModel, sources: Sequence[FrameSource], writers: Sequence[SequenceWriter], settings: Settings,
        smplx=None, on_frame: Callable[[int, dict], None] | None = None, progress: bool = True,
        prep: Callable | None = None) -> dict:
    """Run sequences of one model resolution together (batch axis = sequence). Returns timing.

    `prep(raw_frame) -> [H, W, 3]` replaces the demo's `preprocess` (the evaluation's own frame loader)."""
    b = len(sources)
    rule = settings.state_update
    if rule is None:  # the user-level --ttt3r picks a built-in rule
        rule = su.ttt3r if settings.ttt3r else su.cut3r
    opts = StepOptions(rgb=False, cross=False, state_update=rule)
    sharding = _mesh_and_sharding(b)
    params = model.params
    carry = runtime.init_carry(model.graphdef, params, b)
    if sharding is not None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        params = jax.device_put(params, replicated)
        carry = jax.device_put(carry, sharding)
    put = (lambda x: jax.device_put(x, sharding)) if sharding is not None else jnp.asarray
    readers = [_Reader(s, settings.size, prep=prep) for s in sources]
    iters = [iter(r) for r in readers]
    last = [None] * b
    live = [True] * b
    base = np.tile(np.eye(4, dtype=np.float32), (b, 1, 1))
    total = max(len(s) for s in sources)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="reconstruct", dynamic_ncols=True)
    forward, t_start, t_first, i = [], time.perf_counter(), None, 0
    try:
        while True:
            items = []
            for j in range(b):
                item = next(iters[j], None) if live[j] else None
                if item is None:
                    live[j] = False
                    item = last[j]
                items.append(item)
                last[j] = item
            if not any(live):
                break
            imgs = np.stack([it[1] for it in items])
            update = np.asarray(live)
            reset = np.full(b, bool(settings.reset_interval) and (i + 1) % settings.reset_interval == 0)
            frame = Frame(put(imgs), put(update), put(reset))
            t0 = time.perf_counter()
            carry, out = runtime.step(model.graphdef, params, carry, frame, opts)
            raw_c2w, c2w, focal, world = _frame_geometry(out["camera_pose"], out["pts3d_in_self_view"], jnp.asarray(base))
            verts = _bodies_world(smplx, out, c2w) if (smplx is not None and model.humans) else None
            if reset[0]:  # the official duplicate: same frame, fresh state, outputs dropped
                carry, _ = runtime.step(model.graphdef, params, carry, Frame(frame.img, frame.update, put(~reset)), opts)
            res = jax.device_get({**{k: out[k] for k in _FETCHED if k in out}, "c2w": c2w, "raw_c2w": raw_c2w,
                                  "focal": focal, "world": world, **({"verts": verts} if verts is not None else {})})
            forward.append(time.perf_counter() - t0)
            if reset[0]:
                base = np.einsum("bij,bjk->bik", base, res["raw_c2w"]).astype(np.float32)
            h, w = imgs.shape[1:3]
            for j in range(b):
                if not live[j]:
                    continue
                r = {"c2w": res["c2w"][j], "intrinsics": runtime.intrinsics(res["focal"][j:j + 1], h, w)[0],
                     "depth": res["pts3d_in_self_view"][j, ..., 2], "conf": res["conf_self"][j],
                     "pts3d_world": res["world"][j]}
                if model.humans:
                    r.update({k: res[k][j] for k in ("smpl_valid", "smpl_id", "smpl_score", "smpl_rotmat", "smpl_shape",
                                                     "smpl_expression", "smpl_transl", "n_detected")})
                    if "verts" in res:
                        r["smpl_verts_world"] = res["verts"][j]
                writers[j].add(items[j][0], items[j][1], r)
                if on_frame is not None:
                    on_frame(j, r)
            i += 1
            if t_first is None:
                t_first = time.perf_counter()  # the first frame includes compilation
            if bar is not None:
                bar.update(1)
                rate = (i - 1) / (time.perf_counter() - t_first) if i > 1 else 0.0
                bar.set_postfix(fps=f"{rate:.2f}", humans=_humans_str(res, live))
    finally:
        for r in readers:
            r.close()
        if bar is not None:
            bar.close()
    steady = i - 1  # frames after the first (compiling) one
    wall = time.perf_counter() - (t_first or t_start)
    return {"frames": i, "first_frame_s": (t_first or t_start) - t_start,
            "forward_s_per_frame": float(np.mean(forward[1:])) if steady > 0 else None,
            "end_to_end_s_per_frame": wall / steady if steady > 0 else None}


def _humans_str(res, live):
    if "smpl_valid" not in res:
        return "-"
    return ",".join(str(int(v.sum())) for v, l in zip(res["smpl_valid"], live) if l)


@dataclasses.dataclass
class Job:
    """What a run will read and write, checked before any model is loaded."""

    sources: list[FrameSource]
    outs: list[Path]                         # the final output folder of each source
    targets: dict[Path, Path]                # final folder → where the run writes (itself, or <out>.partial)
    groups: dict[tuple[int, int], list[int]]  # model resolution (W, H) → sources run together


def prepare(inputs: Sequence[str | Path], out_dir: str | Path, settings: Settings = Settings(),
            overwrite: bool = False, protect: Sequence[str | Path] = ()) -> Job:
    """Check the inputs (each source's first frame is decoded and preprocessed) and the output
    folders, and plan the batches; nothing is written.

    An output folder must be absent or empty; with `overwrite` it may also be an earlier
    reconstruction (see `human3r_jax.outputs`), which is then kept until the new one is complete:
    the run writes into `<out>.partial` beside it and swaps it in at the end, and an interrupted or
    failed run leaves the earlier output untouched and its own frames in `<out>.partial`. No output
    folder may be or hold an input, nor one of `protect` (the checkpoint, the SMPL-X model).
    """
    out_dir = Path(out_dir)
    check_settings(settings)
    sources = [FrameSource(p, settings.subsample, settings.max_frames) for p in inputs]
    outs = [out_dir] if len(sources) == 1 else [out_dir / Path(s.path).stem for s in sources]
    if len(set(outs)) != len(outs):
        raise InputError("several inputs have the same name; give inputs with distinct names")
    if out_dir.exists() and not out_dir.is_dir():
        raise outputs.OutputError(f"{out_dir}: exists and is not a folder; choose another --out")
    guarded = [s.path for s in sources] + list(protect)
    targets = {}
    for o in outs:
        targets[o] = o
        if outputs.check_output(o, "reconstruction", overwrite, guarded):
            targets[o] = o.with_name(o.name + ".partial")
            outputs.check_output(targets[o], "reconstruction", True, guarded)
    groups: dict[tuple[int, int], list[int]] = {}
    for j, s in enumerate(sources):
        groups.setdefault(first_frame_size(s, settings.size), []).append(j)
    return Job(sources, outs, targets, groups)


def run_job(job: Job, model: LoadedModel, settings: Settings = Settings(), smplx=None, on_frame=None,
            progress: bool = True) -> list[Path]:
    """Run a prepared job: each group of sources as one batch, each output written as it goes."""
    for o, target in job.targets.items():
        if target != o and target.exists():
            outputs.remove_own(target, "reconstruction")  # left by an earlier interrupted --overwrite run
    for members in job.groups.values():
        outs = [job.outs[j] for j in members]
        writers = [SequenceWriter(job.targets[o], model, settings, job.sources[j], smplx)
                   for j, o in zip(members, outs)]
        complete, error, timing = False, None, {}
        try:
            timing = run(model, [job.sources[j] for j in members], writers, settings, smplx, on_frame, progress)
            complete = True
        except KeyboardInterrupt:
            error = "interrupted"
            raise
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            for w in writers:
                w.close(complete, error, timing)
            for o in outs:
                if job.targets[o] == o:
                    continue
                if complete:
                    outputs.replace_dir(job.targets[o], o)
                else:
                    print(f"{o}: the earlier output is kept as it was; this run's frames are in {job.targets[o]}",
                          file=sys.stderr)
    return job.outs


def reconstruct(inputs: Sequence[str | Path], out_dir: str | Path, model: LoadedModel, settings: Settings = Settings(),
                smplx=None, overwrite: bool = False, on_frame=None, progress: bool = True,
                protect: Sequence[str | Path] = ()) -> list[Path]:
    """Reconstruct each input into out_dir (or out_dir/<input name> for several inputs); see `prepare`."""
    job = prepare(inputs, out_dir, settings, overwrite, protect)
    return run_job(job, model, settings, smplx, on_frame, progress)


def check_settings(settings: Settings) -> None:
    """Refuse settings no run can use (the CLI checks its options the same way when parsing)."""
    if settings.size not in (512, 224):
        raise InputError(f"--size must be 512 or 224, got {settings.size}")
    for name in ("reset_interval", "max_frames", "glb_frame"):
        value = getattr(settings, name)
        low = 0 if name == "glb_frame" else 1
        if value is not None and (not isinstance(value, int) or value < low):
            raise InputError(f"--{name.replace('_', '-')} must be an integer of at least {low}, got {value!r}")
    if settings.subsample < 1:
        raise InputError(f"--subsample must be at least 1, got {settings.subsample}")
    if not math.isfinite(settings.conf_threshold):
        raise InputError(f"--conf-threshold must be a finite number, got {settings.conf_threshold}")
