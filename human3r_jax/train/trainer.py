"""The training loop: the jitted train step, orbax checkpoints with exact resume,
TensorBoard and console logs, data parallelism over every device of every process, and optionally
fully sharded parameters.

    state = TrainState(step, trainable params (nested), optimizer state)
    train_step(state, fixed, frozen, body_model, batch) -> (state', metrics)

Exact resume: every random choice of the data is a function of (seed, batch number) (see
data/bedlam.py), the step itself draws no random numbers, and a checkpoint holds the step, the
trainable parameters and the optimizer state. Restarting from step N therefore replays batches
N, N+1, … exactly as an uninterrupted run; the fixed and frozen parameters come again from the
initialisation (init.py), which is fingerprinted in the checkpoint and checked on resume.

Devices and processes (distributed.py). One mesh with one axis, "data", spans the devices of every
process (`jax.distributed`; one process is the plain case). The batch is split along it: each process
builds only its B/P samples of batch k (the same global batch for any process count) and the global
array is assembled from the parts. Every process runs the steps, the evaluations and the checkpoint
saves and restores (orbax coordinates them); only process 0 writes logs, TensorBoard, console lines
and exports.

Fully sharded parameters (`fsdp`). Each array of the fixed, frozen and trainable groups, of the
optimizer state and of the carried fixed-group gradients is sharded over "data" along its largest
dimension that the device count divides (the first such, on a tie); an array with no such dimension
(scalars, biases of odd size) stays replicated. Between steps a device therefore holds about 1/n of
them. In the step the parameters are gathered before the model uses them (a sharding constraint to
replicated; XLA inserts the all-gathers, and the transposed reduce-scatters for the gradients), so the
forward and backward compute exactly as replicated training does, and the optimizer updates each
shard where it lives; the step pins its outputs to the same shardings. The gathered copies are the
step's temporaries (bench/bench_fsdp_memory.py measures both). The body model and the batch are
placed as without fsdp (replicated; split).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from human3r_jax import checkpoint as ckpt
from human3r_jax import distributed
from human3r_jax.config import Human3rConfig
from human3r_jax.data.schema import NUM_BETAS, STEP_KEYS, batch_spec
from human3r_jax.models.smplx import load_smplx
from human3r_jax.train import optim
from human3r_jax.train.config import TrainConfig, validate
from human3r_jax.train.forward import train_forward
from human3r_jax.train.init import TrainError, check_init_files, init_params, model_config
from human3r_jax.train.losses import eval_loss, total_loss
from human3r_jax.train.targets import complete_targets

log = logging.getLogger("human3r_jax.train")


class TrainState(NamedTuple):
    step: jax.Array  # [] int32: updates done = the next batch number
    trainable: Any  # nested dict of the trainable parameters
    opt_state: Any
    fixed_grads: Any  # {path: array} the carried gradients of the fixed group (fixed_grads="accumulate"), else {}


# ---------------------------------------------------------------- the step


def check_batch(batch, batch_size: int | None, num_views: int | None, max_humans: int) -> None:
    """A batch entering a step: every STEP_KEYS key with `schema.batch_spec`'s dtype and shape (B and V from
    the arguments, or from img where None; H and W from img). chex checks at trace time, so under jit this
    costs nothing per step; an AssertionError names the key and what was expected."""
    missing = [k for k in STEP_KEYS if k not in batch]
    if missing:
        raise AssertionError(f"batch lacks {missing}: a step reads {list(STEP_KEYS)} (schema.STEP_KEYS)")
    chex.assert_rank(batch["img"], 5, custom_message="batch['img'] must be [B, V, H, W, 3]")
    b, v, h, w = batch["img"].shape[:4]
    b, v = batch_size or b, num_views or v
    for k, (dtype, shape) in batch_spec(b, v, max_humans).items():
        if k not in STEP_KEYS:
            continue
        want = tuple((h, w)[i - 2] if d is None else d for i, d in enumerate(shape))  # None: the batch's H, W
        what = (
            f"batch[{k!r}] must be {np.dtype(dtype).name} {list(want)} (schema.batch_spec with B={b}, V={v}, "
            f"M={max_humans}, H×W={h}×{w} of img)"
        )
        chex.assert_shape(batch[k], want, custom_message=what)
        chex.assert_type(batch[k], dtype, custom_message=what)


def predict(hcfg: Human3rConfig, graphdef, trainable, fixed, frozen, body_model, batch, remat: bool = False):
    """Targets of the batch and the training forward's predictions. → (pred, tgt)"""
    params = ckpt.unflatten({**ckpt.flatten(trainable), **fixed, **frozen})
    model = nnx.merge(graphdef, nnx.State(params))
    tgt = complete_targets(body_model, batch, hcfg.img_res, hcfg.dino.patch_size)
    return train_forward(model, batch, tgt, remat=remat), tgt


def gathered(tree, mesh):
    """Arrays (sharded or not) whole on every device of `mesh`, as the step computes with parameters; as they
    are where mesh is None (a step traced without devices)."""
    return tree if mesh is None else jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))


def make_eval_step(hcfg: Human3rConfig, graphdef, mesh=None):
    """The pure evaluation step: the official test criterion's parts (losses.eval_loss) of a batch."""

    def eval_step(trainable, fixed, frozen, body_model, batch):
        check_batch(batch, None, None, hcfg.max_humans)  # no TrainConfig here: B and V are img's
        trainable, fixed, frozen = gathered((trainable, fixed, frozen), mesh)
        pred, tgt = predict(hcfg, graphdef, trainable, fixed, frozen, body_model, batch)
        return eval_loss(body_model, pred, tgt, batch)[1]

    return eval_step


def param_spec(shape: tuple, n: int) -> P:
    """The fsdp placement of an array over n devices: its largest dimension that n divides (the first on a
    tie) split over "data"; P() (replicated) where none is."""
    dims = [i for i, d in enumerate(shape) if d >= n and d % n == 0]
    if n == 1 or not dims:
        return P()
    i = max(dims, key=lambda i: shape[i])
    return P(*(None,) * i, "data")


def state_shardings(tree, mesh, fsdp: bool):
    """NamedShardings of a tree of parameter-like arrays (shapes): `param_spec` with fsdp, else replicated."""
    n = mesh.devices.size if fsdp else 1
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(np.shape(x)), n)), tree)


def make_train_step(cfg: TrainConfig, hcfg: Human3rConfig, graphdef, tx, mesh=None):
    """The pure train step over `mesh`: its state pinned to `state_shardings`, its metrics replicated (no
    placement where mesh is None)."""

    def loss_fn(trainable, fixed, frozen, body_model, batch):
        if cfg.fsdp:  # so that the sums are those of replicated training (see the module docstring)
            trainable, fixed, frozen = gathered((trainable, fixed, frozen), mesh)
        pred, tgt = predict(hcfg, graphdef, trainable, fixed, frozen, body_model, batch, cfg.remat)
        loss, details = total_loss(body_model, pred, tgt, batch, cfg.conf_alpha)
        details["humans"] = tgt["smpl_mask"].sum().astype(jnp.float32)
        return loss, details

    def train_step(state: TrainState, fixed, frozen, body_model, batch):
        check_batch(batch, cfg.batch_size, cfg.num_views, cfg.max_humans)
        with_fixed = cfg.fixed_grads != "ignore"
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1) if with_fixed else 0, has_aux=True)
        (_, metrics), grads = grad_fn(state.trainable, fixed, frozen, body_model, batch)
        g_train, g_fixed = grads if with_fixed else (grads, None)
        g_train, fixed_grads, norm = optim.clip_gradients(
            g_train, g_fixed, state.fixed_grads, cfg.fixed_grads, cfg.clip_norm
        )
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and float32
            updates, opt_state = tx.update(g_train, state.opt_state, state.trainable)
            lr = optim.schedule(cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.total_steps)(state.step)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics.update(grad_norm=norm, lr=lr)
        state = TrainState(state.step + 1, trainable, opt_state, fixed_grads)
        if mesh is not None:
            state = jax.lax.with_sharding_constraint(state, state_shardings(state, mesh, cfg.fsdp))
        return state, gathered(metrics, mesh)

    return train_step


# ---------------------------------------------------------------- the run


# Fields that do not change the compiled step: Trainers differing only in these share one jit.
RUN_ONLY_FIELDS = (
    "workdir",
    "data_root",
    "data_source",
    "tfds_dir",
    "split",
    "init_cut3r",
    "init_multihmr",
    "init",
    "random_init",
    "smplx",
    "seed",
    "max_steps",
    "save_every",
    "keep",
    "keep_period",
    "log_every",
    "prefetch",
    "data_parallel",
    "eval_every",
    "eval_samples",
    "eval_split",
    "eval_resolution",
    "eval_seed",
)


@functools.lru_cache(maxsize=8)
def compiled_step(step_cfg: TrainConfig, hcfg: Human3rConfig, graphdef, tx, mesh):
    # the inputs' shardings are those of the arrays passed; the outputs' are pinned in the step
    return jax.jit(make_train_step(step_cfg, hcfg, graphdef, tx, mesh), donate_argnums=(0,))


@functools.lru_cache(maxsize=8)
def compiled_eval_step(hcfg: Human3rConfig, graphdef, mesh):
    return jax.jit(make_eval_step(hcfg, graphdef, mesh), out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=8)
def optimizer(step_cfg: TrainConfig, trainable_shapes: tuple):
    """One optax transformation per (config, trainable tree), so that equal Trainers share a step."""
    shapes = {k: jax.ShapeDtypeStruct(shape, jnp.float32) for k, shape in trainable_shapes}
    return optim.make_optimizer(
        shapes,
        lr=step_cfg.lr,
        min_lr=step_cfg.min_lr,
        warmup_steps=step_cfg.warmup_steps,
        total_steps=step_cfg.total_steps,
        weight_decay=step_cfg.weight_decay,
        b1=step_cfg.b1,
        b2=step_cfg.b2,
    )


# What orbax writes in a CheckpointManager's folder: step folders and unfinished ones (`3.orbax-checkpoint-tmp-…`).
CHECKPOINT_ENTRY = re.compile(r"\d+(\.orbax-checkpoint-tmp.*)?")


def check_workdir(workdir: Path) -> None:
    """A workdir the run can create or resume in: a folder or nothing yet, under a folder, whose
    checkpoints/ holds only this trainer's (orbax) step folders."""
    existing = next(p for p in (workdir, *workdir.parents) if p.exists())
    if not existing.is_dir():
        raise TrainError(f"workdir={workdir}: {existing} exists and is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainError(f"workdir={workdir}: {existing} is not writable")
    for sub in ("checkpoints", "logs", "export"):
        if (workdir / sub).exists() and not (workdir / sub).is_dir():
            raise TrainError(f"{workdir / sub}: not a folder, where the run keeps its {sub}; use another workdir")
    ckpts = workdir / "checkpoints"
    stray = (
        sorted(p.name for p in ckpts.iterdir() if not (CHECKPOINT_ENTRY.fullmatch(p.name) or p.name.startswith(".")))
        if ckpts.is_dir()
        else []
    )
    if stray:
        raise TrainError(
            f"{ckpts}: not a human3r-jax training checkpoint folder (it holds {', '.join(stray[:3])}); "
            "use another workdir"
        )


class Trainer:
    """Runs training: `run()` trains to `total_steps` (or `max_steps`) from the initial parameters
    (init.py), with checkpoints, evaluations and logs in the workdir.

    Set-up runs in the order that fails fastest, so that a run that cannot start fails in seconds and
    leaves nothing behind: the devices, the input files, data indexes and workdir (`check_inputs`),
    then SMPL-X and the model's weights (minutes at full size), and only then the workdir's checkpoint
    manager and TensorBoard log."""

    def __init__(self, cfg: TrainConfig, log_to_tensorboard: bool = True):
        # load_config and apply_overrides validate; this repeats it (cheap) for a config built in code
        self.cfg = validate(cfg)
        self.hcfg = model_config(cfg)
        self.workdir = Path(cfg.workdir).absolute()
        devices = distributed.process_devices(cfg.data_parallel)
        if cfg.batch_size % jax.process_count():
            raise TrainError(
                f"batch_size={cfg.batch_size} does not split over {jax.process_count()} processes "
                "(each builds an equal part of every batch)"
            )
        if cfg.batch_size % len(devices):
            raise TrainError(f"batch_size={cfg.batch_size} does not split over {len(devices)} devices")
        self.check_inputs()
        self.body_model = load_smplx(cfg.smplx, num_betas=NUM_BETAS)
        params = init_params(cfg, self.hcfg)
        self.graphdef, self.init_fingerprint = params.graphdef, params.fingerprint
        fixed, frozen = params.fixed, params.frozen
        self.n_trainable = int(sum(v.size for v in params.trainable.values()))
        step_cfg = dataclasses.replace(cfg, **{f: getattr(TrainConfig, f) for f in RUN_ONLY_FIELDS})
        self.tx = optimizer(step_cfg, tuple((k, tuple(np.shape(v))) for k, v in sorted(params.trainable.items())))
        trainable = ckpt.unflatten(params.trainable)

        self.mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.fixed, self.frozen = self.place(fixed), self.place(frozen)
        self.body_model = jax.tree.map(lambda x: distributed.global_array(x, self.replicated), self.body_model)
        accumulate = cfg.fixed_grads == "accumulate"
        carried = {k: np.zeros(v.shape, np.float32) for k, v in fixed.items()} if accumulate else {}
        state = TrainState(np.zeros((), np.int32), trainable, jax.device_get(self.tx.init(trainable)), carried)
        self.state = self.place(state)
        self.step_fn = compiled_step(step_cfg, self.hcfg, self.graphdef, self.tx, self.mesh)
        self.eval_fn = compiled_eval_step(self.hcfg, self.graphdef, self.mesh)
        self.best_eval = math.inf  # the lowest evaluation loss (median over batches) so far
        self.open_workdir(log_to_tensorboard)

    def place(self, tree):
        """Host arrays (every process holds them in full) → global arrays with `state_shardings`."""
        return jax.tree.map(distributed.global_array, tree, state_shardings(tree, self.mesh, self.cfg.fsdp))

    def check_inputs(self) -> None:
        """The files the run reads and the workdir it writes, before anything slow; builds the data
        indexes (the training split's, and the evaluation split's when the run evaluates)."""
        cfg = self.cfg
        if not cfg.smplx:
            raise TrainError("set smplx: the SMPL-X model (SMPLX_NEUTRAL.npz or its folder) completes the ground truth")
        if not Path(cfg.smplx).exists():
            raise TrainError(f"smplx={cfg.smplx}: no such file or folder")
        check_init_files(cfg)
        self.index = self.data_index(cfg.split)
        self._eval_index = self.data_index(cfg.eval_split, allow_repeat=False) if cfg.eval_every else None
        check_workdir(self.workdir)

    def open_workdir(self, log_to_tensorboard: bool) -> None:
        """The checkpoint manager and the TensorBoard writer, which create the workdir. If either
        fails, the folders this call created are removed again (rmdir: only while empty)."""
        import orbax.checkpoint as ocp

        made = [
            p
            for p in (self.workdir / "checkpoints", self.workdir / "logs", self.workdir, *self.workdir.parents)
            if not p.exists()
        ]  # deepest first
        try:
            self.manager = ocp.CheckpointManager(
                self.workdir / "checkpoints",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.cfg.keep,
                    keep_period=self.cfg.keep_period,
                    save_interval_steps=self.cfg.save_every,
                    create=True,
                ),
                item_names=("state", "meta"),
            )
            self.writer = None
            if log_to_tensorboard and distributed.is_main():
                from human3r_jax.train.tblog import TensorBoardWriter

                self.writer = TensorBoardWriter(self.workdir / "logs")
        except BaseException:
            for p in made:
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise

    # -------------------------------------------------------- checkpoints

    def meta(self) -> dict:
        return {
            "step": int(self.state.step),
            "seed": self.cfg.seed,
            "init_fingerprint": self.init_fingerprint,
            "best_eval": None if math.isinf(self.best_eval) else self.best_eval,
            "config": json.loads(json.dumps(dataclasses.asdict(self.cfg), default=str)),
        }

    def save(self, force: bool = False) -> bool:
        import orbax.checkpoint as ocp

        step = int(self.state.step)
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(self.state), meta=ocp.args.JsonSave(self.meta())),
            force=force,
        )
        return bool(saved)

    def restore_latest(self) -> int | None:
        """Continue from the newest checkpoint in the workdir, if any. → its step."""
        import orbax.checkpoint as ocp

        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.state)
        try:
            got = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # orbax raises many types for a damaged or mismatched checkpoint
            raise TrainError(
                f"{self.workdir / 'checkpoints' / str(step)}: cannot restore this checkpoint ({e}); "
                "move it away to resume from an earlier one"
            ) from None
        meta = got["meta"]
        if meta.get("seed") != self.cfg.seed:
            raise TrainError(
                f"{self.workdir}: the checkpoint's run used seed {meta.get('seed')}, not {self.cfg.seed}; "
                "the data order would differ"
            )
        if meta.get("init_fingerprint") != self.init_fingerprint:
            raise TrainError(
                f"{self.workdir / 'checkpoints' / str(step)}: saved from a different initialisation "
                f"(fingerprint {meta.get('init_fingerprint')} ≠ {self.init_fingerprint}); use the same "
                "init files, or a new workdir"
            )
        self.state = TrainState(*got["state"])
        self.best_eval = math.inf if meta.get("best_eval") is None else float(meta["best_eval"])
        return step

    def export(self, out_dir: str | Path | None = None) -> Path:
        """The current weights as a converted checkpoint, for `human3r-jax reconstruct`. Every process
        calls it (the weights are gathered); process 0 writes. → the checkpoint folder."""
        trainable, fixed, frozen = distributed.host_copy((self.state.trainable, self.fixed, self.frozen))
        flat = {**ckpt.flatten(trainable), **fixed, **frozen}
        out = Path(out_dir) if out_dir else self.workdir / "export" / f"step_{int(self.state.step)}"
        if not distributed.is_main():
            return out
        cfg = self.cfg
        inputs = (cfg.init, cfg.init_cut3r, cfg.init_multihmr, cfg.smplx, cfg.data_root, cfg.tfds_dir)
        return ckpt.save(
            out,
            self.hcfg,
            ckpt.unflatten(flat),
            source={"trained_steps": int(self.state.step)},
            overwrite=True,
            inputs=inputs,
        )

    # -------------------------------------------------------- steps

    def device_batch(self, batch: dict) -> dict:
        """This process's part of a batch (the pipeline's) → the global batch over the mesh."""
        missing = [k for k in STEP_KEYS if k not in batch]
        if missing:
            raise TrainError(f"the data pipeline's batch lacks {missing}")
        local = {k: batch[k] for k in STEP_KEYS}
        check_batch(local, self.cfg.batch_size // jax.process_count(), self.cfg.num_views, self.cfg.max_humans)
        return distributed.global_batch(local, self.batch_sharding)

    def train_step(self, batch: dict) -> dict:
        self.state, metrics = self.step_fn(
            self.state, self.fixed, self.frozen, self.body_model, self.device_batch(batch)
        )
        return metrics

    def data_index(self, split: str, allow_repeat: bool = True):
        from human3r_jax.data.bedlam.pipeline import open_index

        cfg = self.cfg
        if cfg.data_source == "tfds" and not cfg.tfds_dir:
            raise TrainError("set tfds_dir: the TFDS data_dir of the BEDLAM build (data_source='tfds')")
        if cfg.data_source == "files" and not cfg.data_root:
            raise TrainError("set data_root: the preprocessed BEDLAM folder")
        root = cfg.tfds_dir if cfg.data_source == "tfds" else cfg.data_root
        return open_index(cfg.data_source, root, split=split, num_views=cfg.num_views, allow_repeat=allow_repeat)

    def process_part(self) -> dict:
        """The pipeline's arguments that make it build only this process's samples of each batch."""
        return {"process_index": jax.process_index(), "process_count": jax.process_count()}

    def batches(self, start_step: int):
        from human3r_jax.data.bedlam import iterate

        cfg = self.cfg
        return iterate(
            self.index,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            start_step=start_step,
            resolutions=cfg.resolutions,
            aug_crop=cfg.aug_crop,
            max_humans=cfg.max_humans,
            prefetch=cfg.prefetch,
            **self.process_part(),
        )

    def evaluate(self) -> dict:
        """The official test-set evaluation of the current weights: eval_samples // batch_size fixed
        batches of the eval split (no repeated frames, no crop enlargement, no colour jitter, one
        resolution, seed eval_seed) through the training forward; the test criterion's parts averaged
        over batches (`*_avg`) and the loss's median over batches (`loss_med`, the lower middle value,
        as the original's best-checkpoint criterion)."""
        from human3r_jax.data.bedlam import iterate

        cfg = self.cfg
        if self._eval_index is None:
            self._eval_index = self.data_index(cfg.eval_split, allow_repeat=False)
        batches = iterate(
            self._eval_index,
            batch_size=cfg.batch_size,
            seed=cfg.eval_seed,
            resolutions=(tuple(cfg.eval_resolution),),
            aug_crop=0,
            jitter=False,
            max_humans=cfg.max_humans,
            prefetch=cfg.prefetch,
            **self.process_part(),
        )
        try:
            rows = [
                jax.device_get(
                    self.eval_fn(
                        self.state.trainable, self.fixed, self.frozen, self.body_model, self.device_batch(next(batches))
                    )
                )
                for _ in range(cfg.eval_samples // cfg.batch_size)
            ]
        finally:
            batches.close()
        out = {f"{k}_avg": float(np.mean([r[k] for r in rows])) for k in rows[0]}
        out["loss_med"] = float(sorted(float(r["loss"]) for r in rows)[(len(rows) - 1) // 2])
        return out

    def _evaluate_and_keep_best(self, write) -> None:
        step = int(self.state.step)
        m = self.evaluate()
        best = m["loss_med"] < self.best_eval
        if best:
            self.best_eval = m["loss_med"]
            self.export(self.workdir / "export" / "best")
        write(
            f"eval at step {step}: loss median {m['loss_med']:.4f} mean {m['loss_avg']:.4f} "
            f"(regr {m['loss_regr_avg']:.4f} scale-inv {m['loss_regr_scale_inv_avg']:.4f} "
            f"rgb {m['loss_rgb_avg']:.4f} smpl {m['loss_smpl_avg']:.4f})" + ("  best -> export/best" if best else "")
        )
        if self.writer:
            self.writer.scalars(step, {f"test/{k}": v for k, v in m.items()})

    def run(self, progress: bool = True) -> dict:
        """Train until total_steps (or max_steps); checkpoints every save_every steps and at the end.
        → the last logged metrics."""
        from tqdm import tqdm

        cfg = self.cfg
        start = self.restore_latest() or 0
        end = min(cfg.total_steps, cfg.max_steps) if cfg.max_steps else cfg.total_steps
        main = distributed.is_main()
        if start and main:
            log.info("resuming at step %d", start)
        last, t0, n0 = {}, time.perf_counter(), start
        batches = self.batches(start)
        bar = tqdm(total=end, initial=start, disable=not (progress and main), unit="step", dynamic_ncols=True)
        write = bar.write if main else lambda line: None
        try:
            if cfg.eval_every and start == 0 < end:  # the initial weights, as the original's epoch 0
                self._evaluate_and_keep_best(write)
                t0 = time.perf_counter()
            for step in range(start, end):
                metrics = self.train_step(next(batches))
                bar.update(1)
                loss = float(metrics["loss"])  # every step, as the original: no diverged weights are saved
                if not math.isfinite(loss):
                    raise TrainError(
                        f"step {step}: the loss is {loss} "
                        f"({ {k: float(v) for k, v in jax.device_get(metrics).items()} }); "
                        f"the last checkpoint is step {self.manager.latest_step()}"
                    )
                if (step + 1) % cfg.log_every == 0 or step + 1 == end:
                    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    dt = (time.perf_counter() - t0) / (step + 1 - n0)
                    t0, n0 = time.perf_counter(), step + 1
                    last["s_per_step"] = dt
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
                    write(console_line(step + 1, end, last))
                    if self.writer:
                        self.writer.scalars(step + 1, last)
                if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == end):
                    t_eval = time.perf_counter()
                    self._evaluate_and_keep_best(write)  # before the save: its best_eval is in the checkpoint
                    t0 += time.perf_counter() - t_eval  # s/step counts training only
                self.save()
        finally:
            bar.close()
            batches.close()
        if self.manager.latest_step() != int(self.state.step):
            self.save(force=True)
        self.manager.wait_until_finished()
        if self.writer:
            self.writer.flush()
        return last


def console_line(step: int, total: int, m: dict) -> str:
    return (
        f"step {step}/{total}  loss {m['loss']:.4f} (pts {m['loss_pts']:.4f} rgb {m['loss_rgb']:.4f} "
        f"smpl {m['loss_smpl']:.4f})  humans {m['humans']:.0f}  |g| {m['grad_norm']:.3f}  "
        f"lr {m['lr']:.2e}  {m['s_per_step']:.2f} s/step"
    )
