"""Our checkpoint format: an orbax checkpoint of the parameter tree plus `config.json`.

    OUT_DIR/config.json   {"format": "human3r-jax", "kind": "cut3r", "config": {...}, "source": {...}}
    OUT_DIR/params/       orbax StandardCheckpointer (float32 parameter tree, plain nested dict)

Writes go to a temporary sibling directory that is renamed into place at the end, so an
interrupted save never leaves a directory that looks complete; `overwrite` replaces only an
earlier checkpoint of this program (see `human3r_jax.outputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from human3r_jax import outputs
from human3r_jax.config import Cut3rConfig, DinoConfig, Human3rConfig
from human3r_jax.errors import Human3rError

FORMAT = "human3r-jax"


class CheckpointFormatError(Human3rError):
    pass


ModelConfig = Cut3rConfig | Human3rConfig


def config_to_json(cfg: ModelConfig) -> dict:
    kind = "human3r" if isinstance(cfg, Human3rConfig) else "cut3r"
    return {"kind": kind, "config": dataclasses.asdict(cfg)}


def _from_dict(cls, raw: dict, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = set(raw) - set(fields)
    if extra:
        raise CheckpointFormatError(f"{source}: unknown config fields {sorted(extra)}")
    nested = {"cut3r": Cut3rConfig, "dino": DinoConfig}
    out = {}
    for k, v in raw.items():
        if k in nested and isinstance(v, dict):
            v = _from_dict(nested[k], v, source)
        out[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**out)
    except (TypeError, ValueError) as e:
        raise CheckpointFormatError(f"{source}: invalid config ({e})") from None


def config_from_json(d: dict, source: str = "config.json") -> ModelConfig:
    kinds = {"cut3r": Cut3rConfig, "human3r": Human3rConfig}
    kind = d.get("kind")
    if kind not in kinds:
        raise CheckpointFormatError(f"{source}: unknown model kind {kind!r} (expected one of {sorted(kinds)})")
    return _from_dict(kinds[kind], d.get("config", {}), source)


def model_class(cfg: ModelConfig):
    from human3r_jax.models.cut3r import Cut3r
    from human3r_jax.models.human3r import Human3r

    return Human3r if isinstance(cfg, Human3rConfig) else Cut3r


class _ShapeOnlyRngs(nnx.Rngs):
    """One fixed key for every initializer. Tracing `nnx.Rngs`' counter update makes JAX walk the
    whole trace at each call (quadratic: 50 s for the released CUT3R); shapes need no random stream."""

    def __init__(self):
        super().__init__(0)

    @property
    def params(self):
        return lambda: jax.random.key(0)


def abstract_model(cfg: ModelConfig, dtype=None):
    """The model with shape-only parameters (no memory, no random init)."""
    cls = model_class(cfg)
    return nnx.eval_shape(lambda: cls(cfg, rngs=_ShapeOnlyRngs(), dtype=dtype))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict → {dotted path: leaf}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    """{dotted path: leaf} → nested dict; numeric parts become int keys (nnx.List indices)."""
    root: dict = {}
    for path, v in flat.items():
        node = root
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return root


def param_shapes(model) -> dict[str, tuple]:
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {k: tuple(v.shape) for k, v in flatten(state).items()}


def params_into(model, pure: dict):
    """A new (graphdef, params State) with `pure` (nested dict of arrays) put into `model`'s tree."""
    graphdef, state = nnx.split(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, pure))
    return graphdef, state


def random_params(model, seed: int = 0, as_jax: bool = False) -> dict:
    """Random float32 parameters for `model`'s tree, drawn with NumPy (jax's eager initializers
    compile once per shape: 30 s for a tiny model). Kernels ~ N(0, 1/fan_in); biases and tokens
    ~ N(0, 0.02²); LayerNorm scales 1 + N(0, 0.1²), so that no parameter is a constant."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, shape in param_shapes(model).items():
        x = rng.standard_normal(shape, dtype=np.float32)
        leaf = path.rsplit(".", 1)[-1]
        if leaf == "kernel":
            x *= np.float32(1 / np.sqrt(np.prod(shape[:-1])))
        elif leaf == "scale":
            x = np.float32(1) + np.float32(0.1) * x
        else:
            x *= np.float32(0.02)
        out[path] = jax.numpy.asarray(x) if as_jax else x  # leaf by leaf: one copy alive at a time
    return unflatten(out)


def random_model(cfg: ModelConfig, seed: int = 0, dtype=None):
    """(graphdef, params) of a model with random weights (tests, benchmarks, smoke runs)."""
    model = abstract_model(cfg, dtype)
    return params_into(model, random_params(model, seed, as_jax=True))


def _this_process_only():
    """orbax options for a checkpoint of host arrays that this process writes or reads alone: no barrier with
    the other processes of a multi-process run (the trainer's export is written by process 0 only)."""
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def save(
    out_dir: str | Path,
    cfg: ModelConfig,
    params: dict,
    source: dict | None = None,
    overwrite: bool = False,
    inputs: tuple = (),
) -> Path:
    """Save a nested dict of float32 arrays and the config. With `overwrite`, only an earlier
    checkpoint of this program is replaced, never a folder that is or holds one of `inputs`."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    outputs.check_output(out_dir, "checkpoint", overwrite, inputs)
    bad = [
        path
        for path, leaf in flatten(params).items()
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype") and np.dtype(leaf.dtype).kind in "fiub")
    ]
    if bad:
        raise CheckpointFormatError(f"{out_dir}: not numeric arrays, cannot save: {', '.join(bad[:10])}")
    outputs.check_free_space(out_dir.parent, sum(int(np.asarray(v).nbytes) for v in flatten(params).values()))
    tmp = outputs.make_temp_dir(out_dir.parent, f".{out_dir.name}.tmp-")
    ckptr = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
    unsilence = _silence_failed_writers(tmp)
    try:
        ckptr.save(tmp / "params", jax.tree.map(np.asarray, params))
        ckptr.wait_until_finished()
        meta = {"format": FORMAT, **config_to_json(cfg), "source": source or {}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1))
        outputs.mark(tmp, "checkpoint")
        outputs.replace_dir(tmp, out_dir)
    except BaseException as e:
        # orbax writes in background threads: let them stop before removing their directory
        with contextlib.suppress(Exception):
            ckptr.close()
        _remove_when_quiet(tmp)
        if isinstance(e, (OSError, ValueError, RuntimeError)):  # orbax/tensorstore wrap a full or read-only disk
            raise outputs.OutputError(f"{out_dir}: cannot write the checkpoint ({_first_line(e)})") from None
        raise
    ckptr.close()
    unsilence()
    return out_dir


class _MentionsFilter(logging.Filter):
    def __init__(self, needle: str):
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return self.needle not in text


def _drop_closed_loop_reports(unraisable) -> None:
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    _previous_hook(unraisable)


_previous_hook = sys.unraisablehook


def _silence_failed_writers(folder: Path):
    """Before an orbax save into `folder`: if it fails, orbax's background writers go on failing for
    a while, each logging a traceback that names `folder` (absl, asyncio) and reporting to an asyncio
    loop that is already closed (hundreds of tracebacks in all), while the caller reports the failure
    in one line. Drop those reports; every other log record and unraisable error goes through.
    → a function that undoes this (call it after a save that succeeded)."""
    global _previous_hook
    mentions = _MentionsFilter(str(folder))
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(mentions)
    if sys.unraisablehook is not _drop_closed_loop_reports:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _drop_closed_loop_reports

    def undo():
        for name in ("absl", "asyncio"):
            logging.getLogger(name).removeFilter(mentions)
        if sys.unraisablehook is _drop_closed_loop_reports:
            sys.unraisablehook = _previous_hook

    return undo


def _remove_when_quiet(folder: Path, tries: int = 25) -> None:
    """Remove a failed save's folder; after a write error, tensorstore's pending writes can still
    re-create parts of it for a moment after orbax returns, so make sure it stays gone."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(0.2)
        if not folder.exists():
            return


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_config(ckpt_dir: str | Path) -> tuple[ModelConfig, dict]:
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointFormatError(
            f"{ckpt_dir}: not a human3r-jax checkpoint (no config.json); convert an official .pth "
            "with `human3r-jax convert IN.pth OUT_DIR`"
        )
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointFormatError(f"{cfg_path}: invalid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointFormatError(f"{cfg_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return config_from_json(meta, str(cfg_path)), meta


def load(ckpt_dir: str | Path, dtype=None, **overrides):
    """Load a converted checkpoint → (cfg, graphdef, params State). `overrides` replace config fields
    that do not change the parameters (e.g. a Human3R's max_humans)."""
    import orbax.checkpoint as ocp

    ckpt_dir = Path(ckpt_dir).absolute()
    cfg, _ = read_config(ckpt_dir)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    model = abstract_model(cfg, dtype)
    target = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    try:
        pure = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only()).restore(
            ckpt_dir / "params", target
        )
    except Exception as e:  # orbax raises many types for a damaged or mismatched tree
        raise CheckpointFormatError(f"{ckpt_dir / 'params'}: cannot restore the parameters ({e})") from None
    graphdef, params = params_into(model, pure)
    return cfg, graphdef, params
