"""Training configuration: a frozen dataclass, Python config files that return one, and
command-line overrides (`--set key=value`).

A config file is a Python module with `get_config() -> TrainConfig` and a docstring stating the
command, the expected runtime and the expected result (see human3r_jax/train/configs/).
`--config` takes a file path or the name of a bundled config.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

from human3r_jax.data.bedlam import OFFICIAL_RESOLUTIONS

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file or override that cannot be used."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # model and initialisation
    model: str = "human3r_896L"            # a Human3R preset (human3r_jax.config.preset)
    init_cut3r: str | None = None          # CUT3R: converted checkpoint dir or the official .pth
    init_multihmr: str | None = None       # Multi-HMR .pt (DINOv2 backbone + detection MLPs)
    init: str | None = None                # or: a converted Human3R checkpoint dir (all weights)
    random_init: bool = False              # tests and smoke runs: random weights, no files
    smplx: str | None = None               # SMPL-X: SMPLX_NEUTRAL.npz or a folder holding it
    # data
    data_root: str | None = None           # preprocessed BEDLAM (or synthetic) root
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
    fixed_grads: str = "accumulate"        # the decoders' gradients in the clip norm: "accumulate" (the
                                           # original: never zeroed), "fresh" (this step's), "ignore"
    conf_alpha: float = 0.2
    compute_dtype: str = "bfloat16"        # or "float32"; parameters, heads and losses stay float32
    remat: bool = True                     # rematerialise each view's decoder pass in the backward
    data_parallel: bool = True             # shard the batch over all local devices
    # evaluation: the official test set (1000 samples of the Test split at 512×288, seed 42) before
    # training, every eval_every steps and at the end; the best (median loss) is exported
    eval_every: int = 500                  # steps (one official epoch); 0: no evaluation
    eval_samples: int = 1000
    eval_split: str = "Test"
    eval_resolution: tuple = (512, 288)    # (W, H)
    eval_seed: int = 42
    # run
    seed: int = 0
    workdir: str = "runs/human3r"
    max_steps: int | None = None           # stop early (the schedule still spans all epochs)
    save_every: int = 500                  # steps (500 = one official epoch)
    keep: int = 3                          # most recent checkpoints kept ...
    keep_period: int | None = 2500         # ... plus every keep_period-th step (5 epochs)
    log_every: int = 20

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_epochs * self.steps_per_epoch))


def load_config(name_or_path: str) -> TrainConfig:
    """A config file path, or the name of a bundled config (`human3r_bedlam`, `tiny_synthetic`)."""
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
    return cfg


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
    if t is not None and not isinstance(value, t) or (t is int and isinstance(value, bool)):
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
    return dataclasses.replace(cfg, **changes)
