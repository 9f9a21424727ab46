"""What a run is told: its `Settings` (checked by `check_settings`) and the model it runs (`load_model` →
`LoadedModel`: a converted checkpoint folder, an official .pth converted in memory, or random weights)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax.cameras import POSES_HELP, CameraError
from human3r_jax.config import Human3rConfig, preset
from human3r_jax.data.video import STALL_TIMEOUT, InputError
from human3r_jax.models import state_update as su

CHECKPOINT_HELP = (
    "pass a released name (human3r_896L, human3r_672L, human3r_672B, human3r_672S, cut3r_512_dpt_4_64, "
    "cut3r_224_linear_4: downloaded and checked once, converted into ~/.cache/human3r-jax or $HUMAN3R_JAX_CACHE), "
    "a folder converted with `human3r-jax convert FILE.pth DIR`, or an official .pth (converted on the fly); "
    "or try the pipeline with --random-weights (meaningless output)"
)
# The model's compute dtype by name (parameters stay float32; None: the modules' own float32, the parity setting).
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


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
    # Known cameras (human3r_jax.cameras): K of the input frames (fx,fy,cx,cy text, a file, or [3, 3] / [F, 3, 3]),
    # camera poses (a TUM or COLMAP images.txt file), or a camera that does not move.
    intrinsics: str | Path | np.ndarray | None = None
    camera_poses: str | Path | None = None
    static_camera: bool = False
    # Live sources (data/video.py): keep only the newest frame when the model is slower than the source, and
    # the seconds a source may stay silent before the run ends with an error.
    drop_frames: bool = False
    stall_timeout: float = STALL_TIMEOUT


def check_settings(settings: Settings) -> None:
    """Refuse settings no run can use (the CLI checks its options the same way when parsing). The camera
    files are read by `prepare`, which checks them against the frames."""
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
    if not (math.isfinite(settings.stall_timeout) and settings.stall_timeout > 0):
        raise InputError(f"--stall-timeout must be a positive number of seconds, got {settings.stall_timeout}")
    if settings.static_camera and settings.camera_poses is not None:
        raise CameraError("--static-camera and --camera-poses both set the cameras; give one of them")
    if settings.camera_poses is not None and not Path(settings.camera_poses).is_file():
        raise CameraError(f"--camera-poses: {settings.camera_poses}: no such file; expected {POSES_HELP}")


@dataclasses.dataclass
class LoadedModel:
    cfg: object
    graphdef: object
    params: object
    random_weights: bool
    source: str
    dtype: str = "float32"  # the compute dtype (COMPUTE_DTYPES); parameters and every file written stay float32

    @property
    def humans(self) -> bool:
        return isinstance(self.cfg, Human3rConfig)


def load_model(
    checkpoint: str | Path | None = None,
    random_weights: str | None = None,
    max_humans: int | None = None,
    progress: bool = True,
    dtype: str = "float32",
) -> LoadedModel:
    """A converted checkpoint directory, an official .pth (converted in memory), a released name (`weights`:
    fetched, checked and converted once into the cache), or random weights; computing in `dtype` (a name in
    COMPUTE_DTYPES: float32, the parity setting, or bfloat16 for accelerators)."""
    if checkpoint is None and random_weights is None:
        raise InputError(f"no model given: {CHECKPOINT_HELP}")
    if dtype not in COMPUTE_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
    compute = COMPUTE_DTYPES[dtype]
    if random_weights is not None:
        cfg = preset(random_weights)
        params, source = None, f"random weights ({random_weights})"
    else:
        from human3r_jax.weights import resolve

        path = resolve(checkpoint, progress)  # a path as it is; a released name → its converted folder
        if path.is_dir():
            cfg, _ = ckpt.read_config(path)
            params = None
        else:  # an official checkpoint (.pth, .pt, …): converted in memory
            from human3r_jax.converters.convert import convert_file

            cfg, params, _ = convert_file(path)
        source = str(path) if str(path) == str(checkpoint) else f"{checkpoint} ({path})"
    if max_humans is not None:
        if not isinstance(cfg, Human3rConfig):
            raise InputError("--max-humans applies to Human3R checkpoints; this one is CUT3R (no humans)")
        cfg = dataclasses.replace(cfg, max_humans=max_humans)
    model = ckpt.abstract_model(cfg, compute)
    if random_weights is not None:
        graphdef, state = ckpt.params_into(model, ckpt.random_params(model, seed=0, as_jax=True))
    elif params is None:
        _, graphdef, state = ckpt.load(path, dtype=compute, max_humans=max_humans)
    else:
        graphdef, state = ckpt.params_into(model, params)
    return LoadedModel(cfg, graphdef, state, random_weights is not None, source, dtype)
