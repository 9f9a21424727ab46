"""The run's initial parameters: random (seeded) for the new modules, then CUT3R and Multi-HMR
weights where they exist (the official initialisation), or a whole converted Human3R checkpoint;
split into the config's trainable / fixed / frozen groups, with a fingerprint of what does not
train (a resume must start from the same initialisation: see trainer.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from human3r_jax import checkpoint as ckpt
from human3r_jax.config import HUMAN3R_PRESETS, Human3rConfig
from human3r_jax.errors import Human3rError
from human3r_jax.train import optim
from human3r_jax.train.config import TrainConfig

log = logging.getLogger("human3r_jax.train")


class TrainError(Human3rError, RuntimeError):
    """A run that cannot start or continue (bad initialisation files, a diverged loss, a mismatched resume)."""


class InitialParams(NamedTuple):
    graphdef: Any  # the model's structure (parameters merge back into it in the step)
    trainable: dict  # {path: float32 array}, updated
    fixed: dict  # not updated; gradients in the clip norm
    frozen: dict  # no gradient
    fingerprint: str  # of fixed + frozen: checked on resume


def model_config(cfg: TrainConfig) -> Human3rConfig:
    return dataclasses.replace(HUMAN3R_PRESETS[cfg.model], max_humans=cfg.max_humans)


def check_init_files(cfg: TrainConfig) -> None:
    """The initialisation is chosen and its files exist (seconds, before anything slow)."""
    if not (cfg.random_init or cfg.init or (cfg.init_cut3r and cfg.init_multihmr)):
        raise TrainError(
            "set init_cut3r and init_multihmr (the official initialisation), or init "
            "(a converted Human3R checkpoint), or random_init=True"
        )
    for key in ("init_cut3r", "init_multihmr", "init"):
        path = getattr(cfg, key)
        if path and not Path(path).exists():
            raise TrainError(f"{key}={path}: no such file or folder")
    if cfg.init:
        ckpt.read_config(cfg.init)  # a converted checkpoint folder (not an official .pth)


def _copy_into(flat: dict, source: dict, what: str) -> int:
    for k, v in source.items():
        if k not in flat:
            raise TrainError(f"{what}: parameter {k} has no place in the Human3R tree")
        if tuple(flat[k].shape) != tuple(np.shape(v)):
            raise TrainError(f"{what}: {k} has shape {tuple(np.shape(v))}, the model expects {tuple(flat[k].shape)}")
        flat[k] = np.asarray(v, np.float32)
    return len(source)


def _cut3r_params(path: str) -> dict:
    """A converted CUT3R checkpoint dir, or the official .pth converted on the fly → flat dict."""
    p = Path(path)
    if p.is_dir():
        _, _, params = ckpt.load(p)
        return ckpt.flatten(nnx.to_pure_dict(params))
    from human3r_jax.converters.convert import convert_file

    _, params, _ = convert_file(p)
    return ckpt.flatten(params)


def load_weights(cfg: TrainConfig, hcfg: Human3rConfig, model) -> dict:
    """Flat float32 parameters of `model`'s tree from the config's initialisation
    (`check_init_files` has checked that it is set and its files exist)."""
    flat = ckpt.flatten(ckpt.random_params(model, cfg.seed))
    if cfg.init:
        _, _, params = ckpt.load(cfg.init)
        _copy_into(flat, ckpt.flatten(nnx.to_pure_dict(params)), cfg.init)
    elif not cfg.random_init:
        n = _copy_into(flat, _cut3r_params(cfg.init_cut3r), cfg.init_cut3r)
        from human3r_jax.converters.convert import convert_multihmr_file

        m = _copy_into(flat, ckpt.flatten(convert_multihmr_file(cfg.init_multihmr, hcfg)), cfg.init_multihmr)
        log.info("initialised %d tensors from %s and %d from %s", n, cfg.init_cut3r, m, cfg.init_multihmr)
    return flat


def fingerprint(flat: dict) -> str:
    """A digest of parameters (to check that a resume uses the same initialisation)."""
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode())
        h.update(np.ascontiguousarray(np.asarray(flat[k], np.float32)).tobytes())
    return h.hexdigest()[:16]


def init_params(cfg: TrainConfig, hcfg: Human3rConfig) -> InitialParams:
    """The model's structure and its initial parameters in the config's groups."""
    groups = (cfg.trainable_params, cfg.fixed_params, cfg.frozen_params)
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else None
    model = ckpt.abstract_model(hcfg, dtype)
    optim.split_params(ckpt.param_shapes(model), *groups)  # the groups on shapes first: a bad pattern fails in seconds
    trainable, fixed, frozen = optim.split_params(load_weights(cfg, hcfg, model), *groups)
    return InitialParams(nnx.graphdef(model), trainable, fixed, frozen, fingerprint({**fixed, **frozen}))
