"""What a run is told: its `Settings` (checked by `check_settings`) and the model it runs (`load_model` →
`LoadedModel`: a converted checkpoint folder, an official .pth converted in memory, or random weights)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from human3r_jax import checkpoint as ckpt
from human3r_jax.config import Human3rConfig, preset
from human3r_jax.data.video import InputError
from human3r_jax.models import state_update as su

CHECKPOINT_HELP = (
    "get an official checkpoint (Hugging Face hub, faneggg/human3r: human3r_896L.pth, human3r_672S.pth, …; "
    "CUT3R: cut3r_512_dpt_4_64.pth from the CUT3R release), convert it once with "
    "`human3r-jax convert FILE.pth DIR` and pass --checkpoint DIR (a .pth also works, converted on the fly); "
    "or try the pipeline with --random-weights (meaningless output)"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    size: int = 512  # 512 (long side) or 224 (square crop), as the official load_images
    reset_interval: int | None = None  # official reset_interval (duplicate frame after each reset)
    ttt3r: bool = False
    subsample: int = 1
    max_frames: int | None = None
    conf_threshold: float = 1.5  # points kept in scene.glb (the demo's vis_threshold)
    glb_frame: int | None = None  # frame whose bodies go into scene.glb (default: last with people)
    points_per_frame: int = 5000
    max_points: int = 1_000_000
    state_update: su.Rule | None = None  # a state-update rule of your own (models/state_update.py); overrides ttt3r


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


def load_model(
    checkpoint: str | Path | None = None, random_weights: str | None = None, max_humans: int | None = None
) -> LoadedModel:
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
