"""Convert an official CUT3R / Human3R checkpoint to our parameter tree (and save it).

    cfg, params = convert_file("cut3r_512_dpt_4_64.pth")            # torch-free
    cfg, params = convert_state_dict(torch_state_dict, constructor)   # already loaded with torch
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax.converters.constructor import ConstructorError, parse_constructor
from human3r_jax.config import DinoConfig, Human3rConfig
from human3r_jax.converters.rules import (CUT3R_RULES, HUMAN3R_RULES, ConversionError, cut3r_config_from_args,
                                          human3r_config_from_args, map_state_dict)
from human3r_jax.models.dinov2 import resize_pos_embed
from human3r_jax.converters.torch_zip import CheckpointError, Opaque, TensorRef, omegaconf_value, read_checkpoint


def _strip_module(state: Mapping[str, Any]) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _to_numpy(v: Any, key: str, source: str) -> np.ndarray:
    if isinstance(v, TensorRef):
        return v.array
    if hasattr(v, "detach"):  # a torch tensor, when the caller loaded the file with torch
        return v.detach().cpu().float().numpy()
    if isinstance(v, np.ndarray):
        return v
    raise ConversionError(f"{source}: entry {key!r} is a {type(v).__name__}, not a tensor")


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


def convert_state_dict(state: Mapping[str, Any], constructor: str, source: str = "state_dict",
                       dino: DinoConfig | None = None):
    """(official state_dict, constructor string) → (config, nested params dict).

    `dino` gives the DINOv2 widths of a backbone that is not a hub name (the constructor names it,
    and its head count is in no tensor shape).
    """
    try:
        kwargs = parse_constructor(constructor)
    except ConstructorError as e:
        raise ConversionError(f"{source}: {e}") from None
    state = _strip_module(state)
    storage = {k: (v.storage_key, v.offset) for k, v in state.items() if isinstance(v, TensorRef)}
    arrays = {k: _to_numpy(v, k, source) for k, v in state.items()}
    try:
        cfg = model_config(kwargs, {k: a.shape for k, a in arrays.items()}, dino)
    except ConversionError as e:
        raise ConversionError(f"{source}: {e}") from None
    if isinstance(cfg, Human3rConfig) and POS_EMBED in arrays:
        table = arrays[POS_EMBED]
        if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] != 1 + cfg.dino.pretrain_grid ** 2:
            raise ConversionError(f"{source}: {POS_EMBED} has shape {table.shape}, expected "
                                  f"(1, {1 + cfg.dino.pretrain_grid ** 2}, D)")
        arrays[POS_EMBED] = resize_pos_embed(table, cfg.dino.grid(cfg.img_res), cfg.dino.interpolate_offset)
    model = ckpt.abstract_model(cfg)
    flat = map_state_dict(arrays, ckpt.param_shapes(model), rules_for(cfg), source, storage_of=storage.get)
    return cfg, ckpt.unflatten(flat)


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
        raise ConversionError(f"{path}: no 'model' entry (top-level keys: {sorted(map(str, obj))})")
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
# backbone and detection MLPs are kept (spec §2.1); the rest of Multi-HMR is not part of Human3R.
MULTIHMR_KEPT = (r"^backbone\.", r"^mlp_classif\.", r"^mlp_offset\.")


def convert_multihmr_file(path: str | Path, cfg: Human3rConfig) -> dict:
    """Multi-HMR checkpoint → the subset of our Human3R tree it initialises (nested dict):
    `backbone.*`, `human.mlp_classif.*`, `human.mlp_offset.*`."""
    path = Path(path)
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    state = obj.get("model_state_dict", obj.get("model"))
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: no 'model_state_dict' (top-level keys: {sorted(map(str, obj))})")
    state = _strip_module(state)
    arrays = {}
    for k, v in state.items():
        if any(re.match(p, k) for p in MULTIHMR_KEPT):
            key = k if k.startswith("backbone.") else "downstream_head." + k
            arrays[key] = _to_numpy(v, k, str(path))
    if POS_EMBED in arrays:
        arrays[POS_EMBED] = resize_pos_embed(arrays[POS_EMBED], cfg.dino.grid(cfg.img_res), cfg.dino.interpolate_offset)
    prefixes = ("backbone.", "human.mlp_classif.", "human.mlp_offset.")
    target = {p: s for p, s in ckpt.param_shapes(ckpt.abstract_model(cfg)).items() if p.startswith(prefixes)}
    flat = map_state_dict(arrays, target, HUMAN3R_RULES, str(path))
    return ckpt.unflatten(flat)


def convert_and_save(path: str | Path, out_dir: str | Path, overwrite: bool = False,
                     dino: DinoConfig | None = None) -> Path:
    cfg, params, constructor = convert_file(path, dino)
    return ckpt.save(out_dir, cfg, params, source={"file": str(Path(path).name), "constructor": constructor},
                     overwrite=overwrite)
