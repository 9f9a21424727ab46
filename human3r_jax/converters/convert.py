"""Convert an official CUT3R / Human3R checkpoint to our parameter tree (and save it).

cfg, params = convert_file("cut3r_512_dpt_4_64.pth")            # torch-free
cfg, params = convert_state_dict(torch_state_dict, constructor)   # already loaded with torch
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax import outputs
from human3r_jax.config import DinoConfig, Human3rConfig
from human3r_jax.converters.constructor import parse_constructor
from human3r_jax.converters.pos_embed import resize_pos_embed
from human3r_jax.converters.rules import (
    CUT3R_RULES,
    HUMAN3R_RULES,
    ConversionError,
    Plan,
    apply_plan,
    cut3r_config_from_args,
    human3r_config_from_args,
    plan_mapping,
)
from human3r_jax.converters.torch_zip import (
    CheckpointError,
    Opaque,
    ReadBudget,
    TensorRef,
    brief,
    omegaconf_value,
    read_checkpoint,
)

MAX_CONSTRUCTOR_CHARS = 16 << 10  # real ones: ~700 characters; `ast` takes up to ~500 bytes per character
# A conversion reads at most the float32 bytes of the model's parameters × 2 + 64 MiB from the storages: × 2
# leaves room for float64 storages and for storages shared with entries that are not mapped, the 64 MiB for
# the DINOv2 position table at its pretraining size and other small extras. More is not this model's weights.
READ_SLACK = 64 << 20
# Conversion makes no more values than the checkpoint holds, but for the DINOv2 position table resized to the
# model's grid (a few million values): a constructor describing a far larger model is not this checkpoint's.
MODEL_SLACK = 1 << 24
# Block stacks whose depth the constructor gives. Building the abstract model costs ~50 ms and ~130 kB per
# block: a crafted depth (enc_depth=10**6) is refused before the build unless the state dict holds the blocks.
BLOCK_STACKS = {
    "enc_depth": ("enc_blocks",),
    "dec_depth": ("dec_blocks", "dec_blocks_state"),
    "ray_enc_depth": ("enc_blocks_ray_map",),
}


def _state_dict(state: Mapping, source: str) -> dict:
    """The state dict with its keys checked and a common `module.` prefix (DataParallel) removed."""
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise ConversionError(f"{source}: the state dict has keys that are not strings: {brief(bad)}")
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _shape(v: Any, key: str, source: str) -> tuple:
    if isinstance(v, (TensorRef, np.ndarray)) or hasattr(v, "detach"):  # hasattr: a torch tensor
        return tuple(v.shape)
    raise ConversionError(f"{source}: entry {key!r} is a {type(v).__name__}, not a tensor")


def _to_numpy(v: Any, budget: ReadBudget) -> np.ndarray:
    """The array of an entry `_shape` accepted."""
    if isinstance(v, TensorRef):
        try:
            return v.read(budget)
        except CheckpointError as e:
            raise ConversionError(str(e)) from None
    if hasattr(v, "detach"):  # a torch tensor, when the caller loaded the file with torch: already in memory
        return v.detach().cpu().float().numpy()
    return v


POS_EMBED = "backbone.encoder.pos_embed"


def model_config(kwargs: dict, shapes: Mapping[str, tuple], dino: DinoConfig | None = None):
    """CUT3R or Human3R config from the constructor's arguments and the tensor shapes."""
    if kwargs.get("output_mode") == "pts3d+pose+smpl":
        return human3r_config_from_args(kwargs, shapes, dino)
    return cut3r_config_from_args(kwargs, shapes)


def resized_shapes(shapes: Mapping[str, tuple], cfg) -> dict[str, tuple]:
    """Shapes after conversion-time transforms: the DINOv2 position table at the model's grid."""
    shapes = dict(shapes)
    if isinstance(cfg, Human3rConfig) and POS_EMBED in shapes:
        _, _, d = shapes[POS_EMBED]
        shapes[POS_EMBED] = (1, 1 + cfg.dino.grid(cfg.img_res) ** 2, d)
    return shapes


def rules_for(cfg):
    return HUMAN3R_RULES if isinstance(cfg, Human3rConfig) else CUT3R_RULES


@functools.lru_cache(maxsize=4)
def _target_shapes(cfg) -> dict[str, tuple]:
    """{our dotted path: shape} of the model's parameters (cached: building the abstract model takes seconds).
    The dict is shared: do not modify it."""
    return ckpt.param_shapes(ckpt.abstract_model(cfg))


def _check_depths(cfg, shapes: Mapping[str, tuple], source: str) -> None:
    cut3r = cfg.cut3r if isinstance(cfg, Human3rConfig) else cfg
    for field, stacks in BLOCK_STACKS.items():
        depth = getattr(cut3r, field)
        for stack in stacks:
            held = {k[len(stack) + 1 :].split(".", 1)[0] for k in shapes if k.startswith(stack + ".")}
            if depth > len(held):
                raise ConversionError(
                    f"{source}: the constructor says {field}={depth}, but the state dict holds {len(held)} {stack}"
                )


def _check_model_size(target: Mapping[str, tuple], shapes: Mapping[str, tuple], source: str) -> None:
    need = sum(math.prod(s) for s in target.values())
    held = sum(math.prod(s) for s in shapes.values())
    if need > 2 * held + MODEL_SLACK:
        raise ConversionError(
            f"{source}: the constructor describes a model of {need:,} values; the checkpoint holds {held:,}"
        )


def _check_pos_embed(shapes: Mapping[str, tuple], cfg, source: str) -> None:
    if isinstance(cfg, Human3rConfig) and POS_EMBED in shapes:
        shape, rows = shapes[POS_EMBED], 1 + cfg.dino.pretrain_grid**2
        if len(shape) != 3 or shape[0] != 1 or shape[1] != rows:
            raise ConversionError(f"{source}: {POS_EMBED} has shape {shape}, expected (1, {rows}, D)")


def _read_budget(target: Mapping[str, tuple]) -> ReadBudget:
    return ReadBudget(2 * 4 * sum(math.prod(s) for s in target.values()) + READ_SLACK)


def _read(state: dict, plan: Plan, cfg, source: str, budget: ReadBudget) -> dict[str, np.ndarray]:
    """Read and move the planned entries within `budget`, their storages checked against it before any is read;
    the DINOv2 position table is resized to the model's grid first."""

    def same_view(a: str, b: str) -> bool:
        return all(isinstance(state[k], TensorRef) for k in (a, b)) and state[a].view_key == state[b].view_key

    keys = [key for key, _ in plan.moves.values()] + [k for pair in plan.aliases if not same_view(*pair) for k in pair]
    try:
        budget.check(state[k] for k in keys if isinstance(state[k], TensorRef))
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    if isinstance(cfg, Human3rConfig) and POS_EMBED in state:
        table = _to_numpy(state[POS_EMBED], budget)
        state = {**state, POS_EMBED: resize_pos_embed(table, cfg.dino.grid(cfg.img_res), cfg.dino.interpolate_offset)}
    return apply_plan(plan, lambda k: _to_numpy(state[k], budget), source, same_view)


def convert_state_dict(
    state: Mapping[str, Any], constructor: str, source: str = "state_dict", dino: DinoConfig | None = None
):
    """(official state_dict, constructor string) → (config, nested params dict).

    `state` holds the `TensorRef`s of `read_official` (read here, only the mapped ones, within a budget
    proportional to the model), or torch tensors / numpy arrays already in memory. `dino` gives the
    DINOv2 widths of a backbone that is not a hub name (the constructor names it, and its head count is in
    no tensor shape).
    """
    if isinstance(constructor, str) and len(constructor) > MAX_CONSTRUCTOR_CHARS:
        raise ConversionError(
            f"{source}: the model constructor string has {len(constructor):,} characters "
            f"(at most {MAX_CONSTRUCTOR_CHARS:,})"
        )
    try:
        kwargs = parse_constructor(constructor)
    except (ValueError, RecursionError, MemoryError) as e:  # ConstructorError, or `ast` on a crafted string
        raise ConversionError(f"{source}: {e}") from None
    state = _state_dict(state, source)
    shapes = {k: _shape(v, k, source) for k, v in state.items()}
    try:
        cfg = model_config(kwargs, shapes, dino)
    except (ValueError, TypeError, LookupError) as e:  # ConversionError, or a crafted argument of another type
        raise ConversionError(f"{source}: {e}") from None
    _check_depths(cfg, shapes, source)
    target = _target_shapes(cfg)
    _check_pos_embed(shapes, cfg, source)
    plan = plan_mapping(resized_shapes(shapes, cfg), target, rules_for(cfg), source)
    _check_model_size(target, shapes, source)
    return cfg, ckpt.unflatten(_read(state, plan, cfg, source, _read_budget(target)))


def _constructor_of(args: Any):
    """`args.model` of an OmegaConf config, an argparse Namespace or a plain dict."""
    if isinstance(args, dict):
        return args.get("model")
    value = omegaconf_value(args, "model")
    if value is None and isinstance(args, Opaque) and isinstance(args.state, dict):
        value = args.state.get("model")
    return value


def read_official(path: str | Path) -> tuple[dict, str]:
    """The state_dict (TensorRefs) and constructor string of an official `.pth`, without torch."""
    obj = read_checkpoint(path)
    if "model" not in obj:
        raise ConversionError(f"{path}: no 'model' entry (top-level keys: {brief(list(obj))})")
    state = obj["model"]
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: 'model' is a {type(state).__name__}, not a state_dict")
    constructor = _constructor_of(obj.get("args"))
    if not isinstance(constructor, str):
        raise ConversionError(f"{path}: no model constructor string in ckpt['args'].model")
    return state, constructor


def convert_file(path: str | Path, dino: DinoConfig | None = None):
    path = Path(path)
    try:
        state, constructor = read_official(path)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    cfg, params = convert_state_dict(state, constructor, source=str(path), dino=dino)
    return cfg, params, constructor


# Multi-HMR (`multiHMR_896_L.pt`, state under 'model_state_dict') initialises Human3R training: its
# backbone and detection MLPs are kept; the rest of Multi-HMR is not part of Human3R.
MULTIHMR_KEPT = (r"^backbone\.", r"^mlp_classif\.", r"^mlp_offset\.")


def convert_multihmr_file(path: str | Path, cfg: Human3rConfig) -> dict:
    """Multi-HMR checkpoint → the subset of our Human3R tree it initialises (nested dict):
    `backbone.*`, `human.mlp_classif.*`, `human.mlp_offset.*`. Only those entries are read."""
    path = Path(path)
    source = str(path)
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    state = obj.get("model_state_dict", obj.get("model"))
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: no 'model_state_dict' (top-level keys: {brief(list(obj))})")
    kept = {}
    for k, v in _state_dict(state, source).items():
        if any(re.match(p, k) for p in MULTIHMR_KEPT):
            kept[k if k.startswith("backbone.") else "downstream_head." + k] = v
    prefixes = ("backbone.", "human.mlp_classif.", "human.mlp_offset.")
    target = {p: s for p, s in _target_shapes(cfg).items() if p.startswith(prefixes)}
    shapes = {k: _shape(v, k, source) for k, v in kept.items()}
    _check_pos_embed(shapes, cfg, source)
    plan = plan_mapping(resized_shapes(shapes, cfg), target, HUMAN3R_RULES, source)
    return ckpt.unflatten(_read(kept, plan, cfg, source, _read_budget(target)))


def convert_and_save(
    path: str | Path, out_dir: str | Path, overwrite: bool = False, dino: DinoConfig | None = None
) -> Path:
    """Convert `path` into `out_dir`; the output is checked before the (long) conversion, and
    `overwrite` replaces only an earlier converted checkpoint, never the folder holding `path`."""
    outputs.check_output(Path(out_dir), "checkpoint", overwrite, [path])
    cfg, params, constructor = convert_file(path, dino)
    return ckpt.save(
        out_dir,
        cfg,
        params,
        source={"file": str(Path(path).name), "constructor": constructor},
        overwrite=overwrite,
        inputs=(path,),
    )
