"""The official PyTorch CUT3R / Human3R online loop on this machine: per-frame time and peak memory.

    python bench/torch_reference.py --preset cut3r_224_linear_4 --size 224x224 --frames 2 --cut3r PATH
    python bench/torch_reference.py --preset human3r_672S --frames 2 --human3r PATH --dinov2 PATH

prints one line `RESULT {json}`: s/frame (median over `--frames` frames after one warm-up frame), the
process's peak RSS, the built model's state_dict entries and parameter count (checked against those of
the released model), and for Human3R the humans detected per frame.
`bench/bench.py --against-torch` runs it in its own subprocess next to ours; a bad checkout path or a
missing package is one line on stderr and exit code 2.

Nothing of the official code is copied: the checkouts are imported from the given paths, the model is
built from the released models' constructor arguments with random weights (`torch.manual_seed`), and
the frames go through the official online loop (`inference_recurrent` for CUT3R, the demo's
`inference_recurrent_lighter` for Human3R) in float32 under `torch.inference_mode`. Run-time stand-ins:
* `models.curope`: the compiled CUDA RoPE kernel is replaced by `rope_2d`, the kernel's arithmetic in
  PyTorch (croco's own fallback cannot take the pose token's position -1);
* `dust3r.utils` is imported without its `__init__`, which loads the renderer and the SMPL-X layer that
  the loop does not use; `transformers` (base classes of the config and model) and
  `torchvision.transforms` (an image normaliser built at import) get stand-ins if not installed;
* `torch.hub.load('facebookresearch/dinov2', ...)` loads from the local DINOv2 checkout;
* the SMPL mean parameters that the Human3R head reads in its constructor come from a stand-in file;
* the random detector's output bias is shifted so that the first frame has `--humans` detections (the
  official loop appends one token per detection, so their number sets part of the cost).
Frame boundaries are the calls of the image patch embedding (a forward pre-hook), the first op of
each iteration of the official loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from options import count, frame_size

from human3r_jax.errors import Human3rError

OPTION = "--against-torch"
SOURCES = ("human3r", "cut3r", "dinov2")
# Files each checkout must hold (the DINOv2 one is what torch.hub builds the backbone from).
_DUST3R_FILES = ("src/dust3r/model.py", "src/dust3r/inference.py", "src/croco/models/croco.py")
REQUIRED_FILES = {
    "cut3r": _DUST3R_FILES,
    "human3r": (*_DUST3R_FILES, "src/mhmr/blocks/dinov2.py"),
    "dinov2": ("hubconf.py", "dinov2/hub/backbones.py"),
}
DINOV2_HUB_REPO = "facebookresearch/dinov2"
DET_THRESHOLD = 0.3  # hard-coded in the official Human3R loop

_COMMON = {
    "state_size": 768,
    "state_pe": "2d",
    "pos_embed": "RoPE100",
    "rgb_head": True,
    "pose_head": True,
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
    "pose_mode": ("exp", -math.inf, math.inf),
    "enc_embed_dim": 1024,
    "enc_depth": 24,
    "enc_num_heads": 16,
    "dec_embed_dim": 768,
    "dec_depth": 12,
    "dec_num_heads": 12,
    "patch_embed_cls": "PatchEmbedDust3R",  # what the official load_model substitutes for ManyAR_PatchEmbed
    "landscape_only": False,  # and what it forces
}
_CUT3R = dict(_COMMON, freeze="encoder", output_mode="pts3d+pose")
_HUMAN3R = dict(
    _COMMON,
    freeze="encoder_and_decoder_and_head",
    msk_head=True,
    img_size=(512, 512),
    head_type="dpt",
    output_mode="pts3d+pose+smpl",
)
# Per preset: the repository whose code runs it, the ARCroco3DStereoConfig arguments of the released model
# (its training config's constructor string), and the size of the model they build: (state_dict entries,
# parameters; the 12 DPT alias entries of the 512 models included, each shared tensor counted once).
PRESETS = {
    "cut3r_512_dpt_4_64": ("cut3r", dict(_CUT3R, img_size=(512, 512), head_type="dpt"), (1248, 793_307_858)),
    "cut3r_224_linear_4": ("cut3r", dict(_CUT3R, img_size=(224, 224), head_type="linear"), (1056, 748_443_655)),
    "human3r_672S": ("human3r", dict(_HUMAN3R, backbone="dinov2_vits14", mhmr_img_res=672), (1463, 848_016_494)),
    "human3r_896L": ("human3r", dict(_HUMAN3R, backbone="dinov2_vitl14", mhmr_img_res=896), (1631, 1_167_461_358)),
}


class OfficialCodeError(Human3rError):
    """The official checkouts given to --against-torch cannot run the asked preset."""


# ------------------------------------------------------------------ options (no torch needed)


def parse_sources(items: list[str]) -> dict[str, Path]:
    """`human3r=PATH cut3r=PATH dinov2=PATH` (any subset) -> {name: checkout folder}."""
    sources = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in SOURCES or not path:
            raise OfficialCodeError(f"{OPTION}: expected NAME=PATH with NAME one of {', '.join(SOURCES)}, got {item!r}")
        if name in sources:
            raise OfficialCodeError(f"{OPTION}: {name}= is given twice")
        sources[name] = Path(path).expanduser()
    for name, path in sources.items():
        if not path.is_dir():
            raise OfficialCodeError(f"{OPTION}: {name}={path} is not a folder")
        missing = [f for f in REQUIRED_FILES[name] if not (path / f).is_file()]
        if missing:
            raise OfficialCodeError(f"{OPTION}: {name}={path} is not a {name} checkout (no {missing[0]})")
    if "cut3r" in sources and (sources["cut3r"] / "src/mhmr").is_dir():
        raise OfficialCodeError(f"{OPTION}: cut3r={sources['cut3r']} is a Human3R checkout; pass it as human3r=")
    return sources


def dinov2_source(sources: dict[str, Path]) -> Path | None:
    """The DINOv2 hub checkout: dinov2= if given, else torch.hub's own cache of it if present."""
    if "dinov2" in sources:
        return sources["dinov2"]
    hub = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    cached = Path(hub).expanduser() / "hub" / "facebookresearch_dinov2_main"
    return cached if all((cached / f).is_file() for f in REQUIRED_FILES["dinov2"]) else None


def check_presets(sources: dict[str, Path], presets: list[str]) -> None:
    """Every preset has an official reference and the checkouts it needs; torch is installed."""
    if importlib.util.find_spec("torch") is None:
        raise OfficialCodeError(f"{OPTION}: PyTorch is not installed (pip install torch)")
    for preset in presets:
        if preset not in PRESETS:
            raise OfficialCodeError(f"{OPTION}: no official model for preset {preset!r}; known: {sorted(PRESETS)}")
        repo = PRESETS[preset][0]
        if repo not in sources:
            why = f"{preset} runs from the {repo} code: pass {repo}=PATH"
            if repo == "cut3r" and "human3r" in sources:
                why += " (Human3R's ARCroco3DStereo always builds and runs its DINOv2 branch: no CUT3R-only model)"
            raise OfficialCodeError(f"{OPTION}: {why}")
        if repo == "human3r" and dinov2_source(sources) is None:
            raise OfficialCodeError(f"{OPTION}: {preset} needs DINOv2's hub code: pass dinov2=PATH")


# ------------------------------------------------------------------ run-time stand-ins


def rope_2d(tokens, positions, base: float, f0: float = 1.0):
    """2-D RoPE as the official CUDA kernel computes it.

    tokens [B, heads, N, D] (any dtype), positions [B, N, 2] signed integers (row, column). Each half of
    D rotates by one coordinate: channel j pairs with j + Q (Q = D/4) at angle pos·f0 / base^(j/Q), in
    float32; the result has the tokens' dtype. Like the kernel, float32 tokens are rotated in place: an
    out-of-place rotation allocates several [B, heads, N, D] buffers per call, which PyTorch pays for
    dearly on a small CPU and the official GPU run never does.
    """
    import torch

    q = tokens.shape[-1] // 4
    inv_freq = f0 / base ** (torch.arange(q, dtype=torch.float32, device=tokens.device) / q)  # [Q]
    theta = positions.to(torch.float32)[:, None, :, :, None] * inv_freq  # [B, 1, N, 2, Q]
    cos, sin = theta.cos(), theta.sin()
    x = tokens.to(torch.float32)
    pairs = x.unflatten(-1, (2, 2, q))  # [B, heads, N, half, pair, Q]
    a, b = pairs[..., 0, :], pairs[..., 1, :]
    a0 = a.clone()
    a.mul_(cos).addcmul_(b, sin, value=-1)
    b.mul_(cos).addcmul_(a0, sin)
    return x.to(tokens.dtype)


def _curope_module():
    """A `models.curope` module whose `cuRoPE2D` (what croco imports when compiled) runs `rope_2d`."""
    import torch

    class CuRoPE2D(torch.nn.Module):
        def __init__(self, freq=100.0, F0=1.0):
            super().__init__()
            self.base, self.f0 = freq, F0

        def forward(self, tokens, positions):
            return rope_2d(tokens, positions, self.base, self.f0)

    mod = types.ModuleType("models.curope")
    mod.cuRoPE2D = CuRoPE2D
    return mod


def _transformers_modules():
    """Base classes the official config and model derive from (Hugging Face hub plumbing, unused here)."""
    import collections

    import torch

    class PretrainedConfig:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class PreTrainedModel(torch.nn.Module):
        def __init__(self, config, *args, **kwargs):
            super().__init__()
            self.config = config

    class ModelOutput(collections.OrderedDict):
        pass

    root = types.ModuleType("transformers")
    root.PretrainedConfig, root.PreTrainedModel = PretrainedConfig, PreTrainedModel
    outputs = types.ModuleType("transformers.modeling_outputs")
    outputs.BaseModelOutput = ModelOutput
    file_utils = types.ModuleType("transformers.file_utils")
    file_utils.ModelOutput = ModelOutput
    return {"transformers": root, "transformers.modeling_outputs": outputs, "transformers.file_utils": file_utils}


def _torchvision_modules():
    """`torchvision.transforms` names that dust3r.utils.image uses to build a normaliser at import."""

    class Transform:
        def __init__(self, *args, **kwargs):
            pass

    transforms = types.ModuleType("torchvision.transforms")
    transforms.Compose = transforms.ToTensor = transforms.Normalize = Transform
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms}


def install_stand_ins(checkout: Path, dinov2: Path | None) -> None:
    """Make the official `src/` importable on a CPU machine without its renderer or CUDA kernels."""
    import torch

    src = checkout / "src"
    sys.path.insert(0, str(src))
    sys.modules["models.curope"] = _curope_module()
    if importlib.util.find_spec("transformers") is None:
        sys.modules.update(_transformers_modules())
    if importlib.util.find_spec("torchvision") is None:
        sys.modules.update(_torchvision_modules())
    import dust3r

    utils = types.ModuleType("dust3r.utils")
    utils.__path__ = [str(src / "dust3r" / "utils")]
    sys.modules["dust3r.utils"] = dust3r.utils = utils
    if dinov2 is not None:
        hub_load = torch.hub.load

        def load(repo_or_dir, model, *args, **kwargs):
            if repo_or_dir == DINOV2_HUB_REPO:
                return hub_load(str(dinov2), model, *args, source="local", **kwargs)
            return hub_load(repo_or_dir, model, *args, **kwargs)

        torch.hub.load = load


def write_mean_params(folder: Path) -> Path:
    """A stand-in smpl_mean_params.npz: identity 6-D rotations for 24 joints, zero shape, unit-scale camera."""
    path = folder / "smpl_mean_params.npz"
    six_d = np.tile(np.eye(3, dtype=np.float32)[:, :2].reshape(-1), 24)
    np.savez(path, pose=six_d, shape=np.zeros(10, np.float32), cam=np.array([0.9, 0.0, 0.0], np.float32))
    return path


# ------------------------------------------------------------------ model, inputs, timing


def build(preset: str, seed: int, tmp: Path):
    """The official model of `preset` with random weights, in eval mode."""
    import torch

    repo, kwargs, _ = PRESETS[preset]
    if repo == "human3r":
        import dust3r.heads.dpt_head as dpt_head

        dpt_head.MEAN_PARAMS = str(write_mean_params(tmp))
    from dust3r.model import ARCroco3DStereo, ARCroco3DStereoConfig

    torch.manual_seed(seed)
    return ARCroco3DStereo(ARCroco3DStereoConfig(**kwargs)).eval()


def model_size(model) -> tuple[int, int]:
    """(state_dict entries, parameters with each shared tensor counted once)."""
    return len(model.state_dict()), sum(p.numel() for p in model.parameters())


def make_views(imgs: list[np.ndarray], img_res: int | None) -> list[dict]:
    """The demo's per-frame view dicts (prepare_input: images only, no reset) for frames [1, H, W, 3] in [-1, 1]."""
    import torch

    if img_res is not None:  # Human3R's inputs, from its own helpers (CUT3R's dust3r has neither)
        from dust3r.utils.geometry import get_camera_parameters
        from dust3r.utils.image import pad_image
    views = []
    for i, img in enumerate(imgs):
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))  # [1, 3, H, W]
        h, w = t.shape[-2:]
        view = {
            "img": t,
            "ray_map": torch.full((1, 6, h, w), torch.nan),
            "true_shape": torch.tensor([[h, w]], dtype=torch.int32),
            "idx": i,
            "instance": str(i),
            "camera_pose": torch.eye(4).unsqueeze(0),
            "img_mask": torch.tensor([True]),
            "ray_mask": torch.tensor([False]),
            "update": torch.tensor([True]),
            "reset": torch.tensor([False]),
        }
        if img_res is not None:
            view["img_mhmr"] = pad_image(t, img_res)
            view["K_mhmr"] = get_camera_parameters(img_res, device="cpu")
        views.append(view)
    return views


def calibrate_detector(model, img_mhmr, humans: int) -> None:
    """Shift the detector's output bias so that exactly `humans` score peaks of this image [1, 3, S, S]
    (after the official NMS) pass the official threshold."""
    import torch
    from dust3r.smpl_model import nms

    # the ImageNet normalisation that the official loop applies to img_mhmr before DINOv2
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    with torch.inference_mode():
        g = model.bb_token_res
        scores = model.downstream_head.detect_mhmr(model.backbone((img_mhmr * 0.5 + 0.5 - mean) / std))
        peaks = nms(scores.reshape(1, 1, g, g), kernel=3).flatten().sort(descending=True).values.double()
    logit = lambda p: math.log(p / (1 - p))
    cut = (logit(peaks[humans - 1].item()) + logit(peaks[humans].item())) / 2 if humans else logit(peaks[0].item()) + 1
    with torch.no_grad():
        model.downstream_head.mlp_classif[-1].bias += logit(DET_THRESHOLD) - cut


def time_loop(model, views, repo: str) -> tuple[list[float], list]:
    """Run the official online loop over `views`; (seconds per view, per-view outputs)."""
    import torch

    stamps = []
    hook = model.patch_embed.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    with torch.inference_mode():
        if repo == "human3r":
            from dust3r.inference import inference_recurrent_lighter

            out, _ = inference_recurrent_lighter(views, model, "cpu", verbose=False)
        else:
            from dust3r.inference import inference_recurrent

            out, _ = inference_recurrent(views, model, "cpu", verbose=False)
    stamps.append(time.perf_counter())
    hook.remove()
    return list(np.diff(stamps)), out["pred"]


def run(preset: str, size: str, frames: int, seed: int, humans: int, checkout: Path, dinov2: Path | None) -> dict:
    """Build the official model of `preset` from `checkout`, run `frames` + 1 random frames, return the figures."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    repo, kwargs, expected = PRESETS[preset]
    try:
        install_stand_ins(checkout, dinov2 if repo == "human3r" else None)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            model = build(preset, seed, Path(tmp))
            build_s = time.perf_counter() - t0
    except ImportError as e:  # a package the official code needs, or a checkout of other code
        raise OfficialCodeError(f"{OPTION}: the official code at {repo}={checkout} does not import: {e}") from None
    size_got = model_size(model)
    if size_got != expected:
        raise OfficialCodeError(
            f"{OPTION}: {repo}={checkout} builds {preset} with {size_got[0]} state_dict entries and "
            f"{size_got[1]:,} parameters, not the official {expected[0]} and {expected[1]:,}"
        )
    w, h = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(seed)  # the same frames as bench.py's run_one
    imgs = [rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32) for _ in range(frames + 1)]
    views = make_views(imgs, kwargs.get("mhmr_img_res"))
    if repo == "human3r":
        calibrate_detector(model, views[0]["img_mhmr"], humans)
    times, preds = time_loop(model, views, repo)
    times = times[1:]  # the first frame also initialises the state and warms up the allocator
    res = {
        "preset": preset,
        "size": size,
        "frames": frames,
        "code": f"{repo}={checkout}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "build_s": round(build_s, 2),
        "s_per_frame": float(np.median(times)),
        "s_per_frame_min": float(np.min(times)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "state_dict_entries": size_got[0],
        "parameters": size_got[1],
    }
    if repo == "human3r":
        res["humans_per_frame"] = [int(p["smpl_loc"].shape[1]) for p in preds]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--size", default="512x288", type=frame_size, help="WxH (multiples of 16)")
    p.add_argument("--frames", type=count, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--humans", type=int, default=16, help="detections on the first frame (Human3R)")
    for name in SOURCES:
        p.add_argument(f"--{name}", type=Path, help=f"the official {name} checkout")
    args = p.parse_args(argv)
    try:
        sources = parse_sources([f"{n}={getattr(args, n)}" for n in SOURCES if getattr(args, n) is not None])
        check_presets(sources, [args.preset])
        repo = PRESETS[args.preset][0]
        res = run(args.preset, args.size, args.frames, args.seed, args.humans, sources[repo], dinov2_source(sources))
    except OfficialCodeError as e:
        print(e, file=sys.stderr)
        return 2
    print("RESULT " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
