"""Convert an official CUT3R / Human3R checkpoint to our parameter tree (and save it).

    cfg, params = convert_file("cut3r_512_dpt_4_64.pth")            # torch-free
    cfg, params = convert_state_dict(torch_state_dict, constructor)   # already loaded with torch
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax.converters.constructor import ConstructorError, parse_constructor
from human3r_jax.converters.rules import CUT3R_RULES, ConversionError, cut3r_config_from_args, map_state_dict
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


def convert_state_dict(state: Mapping[str, Any], constructor: str, source: str = "state_dict"):
    """(official state_dict, constructor string) → (Cut3rConfig, nested params dict)."""
    try:
        kwargs = parse_constructor(constructor)
    except ConstructorError as e:
        raise ConversionError(f"{source}: {e}") from None
    state = _strip_module(state)
    storage = {k: (v.storage_key, v.offset) for k, v in state.items() if isinstance(v, TensorRef)}
    arrays = {k: _to_numpy(v, k, source) for k, v in state.items()}
    if kwargs.get("output_mode") == "pts3d+pose+smpl":
        raise ConversionError(f"{source}: Human3R checkpoints are not supported by this converter yet")
    try:
        cfg = cut3r_config_from_args(kwargs, {k: a.shape for k, a in arrays.items()})
    except ConversionError as e:
        raise ConversionError(f"{source}: {e}") from None
    model = ckpt.abstract_model(cfg)
    flat = map_state_dict(arrays, ckpt.param_shapes(model), CUT3R_RULES, source, storage_of=storage.get)
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


def convert_file(path: str | Path):
    path = Path(path)
    try:
        state, constructor = read_official(path)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    cfg, params = convert_state_dict(state, constructor, source=str(path))
    return cfg, params, constructor


def convert_and_save(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    cfg, params, constructor = convert_file(path)
    return ckpt.save(out_dir, cfg, params, source={"file": str(Path(path).name), "constructor": constructor},
                     overwrite=overwrite)
