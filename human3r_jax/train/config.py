"""Training configuration: a frozen dataclass, Python config files that return one, and
command-line overrides (`--set key=value`).

A config file is a Python module with `get_config() -> TrainConfig` and a docstring stating the
command, the expected runtime and the expected result (see human3r_jax/train/configs/).
`--config` takes a file path or the name of a bundled config. `validate` checks every field (types,
ranges, the fields that depend on each other) where a config is loaded or overridden, before anything
is built.

What trains is part of the config, as in big_vision: three lists of regular expressions (`re.search`
on the parameters' dotted paths, e.g. `human.decpose.fc1.kernel`) name the trainable, fixed and
frozen groups; `optim.split_params` refuses a parameter in no group or in two, and a pattern that
matches nothing (a misspelling, or a renamed parameter), so nothing is frozen silently.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import re
from pathlib import Path

from human3r_jax.config import HUMAN3R_PRESETS
from human3r_jax.data.schema import OFFICIAL_RESOLUTIONS, SPLITS
from human3r_jax.errors import Human3rError

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(Human3rError):
    """A config file or override that cannot be used."""


# The official parameter groups, as configs/human3r_bedlam.py writes them out.
# Updated by AdamW: the prompt generator, the SMPL-X heads, the mask head and the prior's padding token.
TRAINABLE = (
    r"^human\.(mlp_fuse|decpose|decshape|decexpression|deccam|mlp_msk)\.",
    r"^mhmr_masked_smpl_token$",
)
# The official `_is_frozen` modules: gradients flow through them and count in the clip norm; not updated.
FIXED = (
    r"^decoder\.",
    r"^state_embed\.",
    r"^pose_token$",
    r"^register_tokens$",
    r"^pose_retriever\.",
    r"^head\.(dpt_self|dpt_cross|dpt_rgb|final_transform|pose_head)\.",
)
# No gradient: the encoders, DINOv2, the detection MLPs, the prior's mean-pose buffers and the input
# padding tokens. `masked_smpl_token` is here although the official optimizer lists it: it is only used
# detached, so torch's AdamW never changes it.
FROZEN = (
    r"^encoder\.",
    r"^ray_encoder\.",
    r"^backbone\.",
    r"^human\.(mlp_classif|mlp_offset)\.",
    r"^human\.init_(body_pose|betas|betas_kid|cam|expression)$",
    r"^(masked_img_token|masked_ray_map_token|mhmr_masked_img_token|masked_smpl_token)$",
)

# Where the data index comes from: data.bedlam.pipeline.DATA_SOURCES (not imported: the trainer's modules
# do not load the data pipeline).
DATA_SOURCES = ("files", "tfds")

# How the fixed group's gradients enter the clip norm (see optim.clip_gradients).
FIXED_GRADS = ("accumulate", "fresh", "ignore")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # model and initialisation
    model: str = "human3r_896L"  # a Human3R preset (human3r_jax.config.preset)
    init_cut3r: str | None = None  # CUT3R: converted checkpoint dir or the official .pth
    init_multihmr: str | None = None  # Multi-HMR .pt (DINOv2 backbone + detection MLPs)
    init: str | None = None  # or: a converted Human3R checkpoint dir (all weights)
    random_init: bool = False  # tests and smoke runs: random weights, no files
    smplx: str | None = None  # SMPL-X: SMPLX_NEUTRAL.npz or a folder holding it
    # what trains: regexes over the dotted parameter paths; every parameter in exactly one group
    trainable_params: tuple = TRAINABLE  # updated by AdamW
    fixed_params: tuple = FIXED  # not updated; their gradients count in the clip norm
    frozen_params: tuple = FROZEN  # no gradient
    # data
    data_root: str | None = None  # preprocessed BEDLAM (or synthetic) root (data_source "files")
    data_source: str = "files"  # "files": data_root's preprocessed layout; "tfds": the TFDS build in tfds_dir
    tfds_dir: str | None = None  # the TFDS data_dir holding bedlam_tfds/ (data_source "tfds")
    split: str = "Training"
    num_views: int = 4
    max_humans: int = 10
    resolutions: tuple = OFFICIAL_RESOLUTIONS  # (W, H), one per batch
    aug_crop: int = 16
    batch_size: int = 8
    samples_per_epoch: int = 4000
    prefetch: int = 2
    # optimisation
    epochs: int = 40
    warmup_epochs: float = 5.0
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    b1: float = 0.9
    b2: float = 0.95
    clip_norm: float = 1.0
    fixed_grads: str = "accumulate"  # the decoders' gradients in the clip norm: "accumulate" (the
    # original: never zeroed), "fresh" (this step's), "ignore"
    conf_alpha: float = 0.2
    compute_dtype: str = "bfloat16"  # or "float32"; parameters, heads and losses stay float32
    remat: bool = True  # rematerialise each view's decoder pass in the backward
    data_parallel: bool = True  # shard the batch over every device (of every process)
    fsdp: bool = False  # also shard the parameters and the optimizer state over the devices (see trainer.py)
    # evaluation: the official test set (1000 samples of the Test split at 512×288, seed 42) before
    # training, every eval_every steps and at the end; the best (median loss) is exported
    eval_every: int = 500  # steps (one official epoch); 0: no evaluation
    eval_samples: int = 1000
    eval_split: str = "Test"
    eval_resolution: tuple = (512, 288)  # (W, H)
    eval_seed: int = 42
    # run
    seed: int = 0
    workdir: str = "runs/human3r"
    max_steps: int | None = None  # stop early (the schedule still spans all epochs)
    save_every: int = 500  # steps (500 = one official epoch)
    keep: int = 3  # most recent checkpoints kept ...
    keep_period: int | None = 2500  # ... plus every keep_period-th step (5 epochs)
    log_every: int = 20

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)


def load_config(name_or_path: str) -> TrainConfig:
    """A config file path, or the name of a bundled config (`human3r_bedlam`, `tiny_synthetic`), validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.py"
    if not path.is_file():
        bundled = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise ConfigError(f"{name_or_path}: no such config file (bundled configs: {', '.join(bundled)})")
    spec = importlib.util.spec_from_file_location(f"human3r_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a config is code the user chose to run, like any script
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not TrainConfig")
    return validate(cfg)


def _parse_value(field: dataclasses.Field, text: str, key: str):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word: a string (paths, dtypes, presets)
    if value is None or field.type in ("str", "str | None"):
        return None if value is None else str(text)
    want = {"int": int, "float": float, "bool": bool, "tuple": tuple, "int | None": int, "float | None": float}
    t = want.get(field.type)
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if t is tuple and isinstance(value, list):
        value = tuple(tuple(x) if isinstance(x, list) else x for x in value)
    if (t is not None and not isinstance(value, t)) or (t is int and isinstance(value, bool)):
        raise ConfigError(f"--set {key}={text}: expected {field.type}")
    return value


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`key=value` strings (Python literals; bare words are strings) → a new config."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item}: expected key=value")
        if key not in fields:
            raise ConfigError(f"--set {item}: unknown key {key!r} (keys: {', '.join(sorted(fields))})")
        changes[key] = _parse_value(fields[key], text.strip(), key)
    return validate(dataclasses.replace(cfg, **changes))


# ---------------------------------------------------------------- validation


COMPUTE_DTYPES = ("bfloat16", "float32")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _count(lo: int, optional: bool = False):
    return (
        (lambda v, c: (optional and v is None) or (_int(v) and v >= lo)),
        f"must be an integer at least {lo}" + (" or None" if optional else ""),
    )


def _choice(options):
    return (lambda v, c: isinstance(v, str) and v in options), f"must be one of {', '.join(options)}"


FLAG = (lambda v, c: isinstance(v, bool)), "must be True or False"
PATH = (lambda v, c: v is None or _text(v)), "must be a path (a non-empty string) or None"
POSITIVE = (lambda v, c: _real(v) and v > 0), "must be a finite number above 0"
FRACTION = (lambda v, c: _real(v) and 0 <= v < 1), "must be a number in [0, 1)"


def _patch(c: TrainConfig) -> int:
    return HUMAN3R_PRESETS[c.model].cut3r.patch_size


def _size(v, c: TrainConfig) -> bool:
    """(W, H): positive multiples of the patch size (the encoder's token grid; the crops take any size)."""
    return isinstance(v, tuple) and len(v) == 2 and all(_int(x) and x > 0 and x % _patch(c) == 0 for x in v)


def _bad_regex(p) -> str | None:
    """Why `p` is not a regular expression, or None."""
    if not isinstance(p, str):
        return f"{p!r} is not a string"
    try:
        re.compile(p)
    except re.error as e:
        return f"{p!r} is not a regular expression ({e})"
    return None


def _patterns(key: str, least: int):
    """A tuple of at least `least` regexes; the message names the first bad pattern."""

    def need(c: TrainConfig) -> str:
        v = getattr(c, key)
        bad = next((why for why in map(_bad_regex, v) if why), None) if isinstance(v, tuple) else None
        return f"must be a tuple of at least {least} regular expression(s) over the dotted parameter paths" + (
            f": {bad}" if bad else ""
        )

    return (lambda v, c: isinstance(v, tuple) and len(v) >= least and not any(map(_bad_regex, v))), need


def _sizes_need(what: str):
    return lambda c: f"must be {what}, W and H positive multiples of {_patch(c)} (the patch size of {c.model})"


# field → (test(value, cfg), what it must be: text formatted with c=cfg, or a function of cfg). In field
# order: a test may use the fields before it, which have passed theirs.
RULES = {
    "model": _choice(tuple(HUMAN3R_PRESETS)),
    "init_cut3r": PATH,
    "init_multihmr": PATH,
    "init": (
        (lambda v, c: v is None or (_text(v) and not (c.init_cut3r or c.init_multihmr))),
        "must be a path or None, and not set with init_cut3r or init_multihmr (its alternative)",
    ),
    "random_init": (
        (lambda v, c: isinstance(v, bool) and not (v and (c.init or c.init_cut3r or c.init_multihmr))),
        "must be True or False; True takes no init, init_cut3r or init_multihmr",
    ),
    "smplx": PATH,
    "trainable_params": _patterns("trainable_params", 1),
    "fixed_params": _patterns("fixed_params", 0),
    "frozen_params": _patterns("frozen_params", 0),
    "data_root": PATH,
    "data_source": _choice(DATA_SOURCES),
    "tfds_dir": PATH,
    "split": _choice(tuple(SPLITS)),
    "num_views": _count(2),
    "max_humans": _count(1),
    "resolutions": (
        (lambda v, c: isinstance(v, tuple) and len(v) > 0 and all(_size(r, c) for r in v)),
        _sizes_need("a non-empty tuple of (W, H) pairs"),
    ),
    "aug_crop": _count(0),
    "batch_size": _count(1),
    "samples_per_epoch": (
        (lambda v, c: _int(v) and v >= c.batch_size),
        "must be an integer at least batch_size ({c.batch_size}): one step per epoch",
    ),
    "prefetch": _count(0),
    "epochs": _count(1),
    "warmup_epochs": ((lambda v, c: _real(v) and 0 <= v <= c.epochs), "must be a number in [0, epochs={c.epochs}]"),
    "lr": POSITIVE,
    "min_lr": ((lambda v, c: _real(v) and 0 <= v <= c.lr), "must be a number in [0, lr={c.lr}]"),
    "weight_decay": ((lambda v, c: _real(v) and v >= 0), "must be a finite number at least 0"),
    "b1": FRACTION,
    "b2": FRACTION,
    "clip_norm": POSITIVE,
    "fixed_grads": _choice(FIXED_GRADS),
    "conf_alpha": POSITIVE,
    "compute_dtype": _choice(COMPUTE_DTYPES),
    "remat": FLAG,
    "data_parallel": FLAG,
    "fsdp": FLAG,
    "eval_every": _count(0),
    "eval_samples": (
        (lambda v, c: _int(v) and v >= (c.batch_size if c.eval_every else 1)),
        (
            "must be an integer at least 1, and at least one batch (batch_size={c.batch_size}) when "
            "eval_every > 0; set eval_every=0 to train without evaluation"
        ),
    ),
    "eval_split": _choice(tuple(SPLITS)),
    "eval_resolution": (_size, _sizes_need("one (W, H) pair")),
    "eval_seed": _count(0),
    "seed": _count(0),
    "workdir": ((lambda v, c: _text(v)), "must be a folder path (a non-empty string)"),
    "max_steps": _count(1, optional=True),
    "save_every": _count(1),
    "keep": _count(1),
    "keep_period": _count(1, optional=True),
    "log_every": _count(1),
}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Every field of `cfg` checked (RULES) → cfg; else ConfigError naming the first bad key and its value."""
    for key, (ok, need) in RULES.items():
        value = getattr(cfg, key)
        if not ok(value, cfg):
            raise ConfigError(f"{key}={value!r}: " + (need(cfg) if callable(need) else need.format(c=cfg)))
    return cfg
