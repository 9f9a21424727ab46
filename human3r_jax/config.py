"""Model configurations: frozen dataclasses with the official checkpoints as named presets.

Widths that the official code hard-codes (DPT layer widths, the ray-map encoder's head count) are
fields here with the official values as defaults, so that small test models and the parity
fixtures (which override them) run through the same code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

HeadType = Literal["dpt", "linear"]


@dataclasses.dataclass(frozen=True)
class DinoConfig:
    """A DINOv2 ViT (hub defaults: img_size 518, patch 14, LayerScale, MLP ×4, no register tokens)."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    mlp_ratio: float = 4
    pretrain_grid: int = 37  # 518 / 14: side of the stored position table
    interpolate_offset: float = 0.1

    def grid(self, img_res: int) -> int:
        """Token-grid side for a square input of side `img_res` (a multiple of the patch size)."""
        if img_res <= 0 or img_res % self.patch_size:
            raise ValueError(
                f"DINOv2 input side {img_res} is not a positive multiple of the patch size {self.patch_size}"
            )
        return img_res // self.patch_size


DINO_PRESETS: dict[str, DinoConfig] = {
    "dinov2_vits14": DinoConfig(embed_dim=384, depth=12, num_heads=6),
    "dinov2_vitb14": DinoConfig(embed_dim=768, depth=12, num_heads=12),
    "dinov2_vitl14": DinoConfig(embed_dim=1024, depth=24, num_heads=16),
}


def dino_preset(name: str) -> DinoConfig:
    try:
        return DINO_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown DINOv2 backbone {name!r}; known: {sorted(DINO_PRESETS)}") from None


@dataclasses.dataclass(frozen=True)
class Cut3rConfig:
    """CUT3R (`ARCroco3DStereo` with `output_mode='pts3d+pose'`).

    Defaults are the released `cut3r_512_dpt_4_64` model.
    """

    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    state_dec_num_heads: int = 16
    mlp_ratio: float = 4.0
    state_size: int = 768
    state_pe: Literal["2d", "1d"] = "2d"
    local_mem_size: int = 256
    ray_enc_depth: int = 2
    ray_enc_num_heads: int = 16  # hard-coded in the official code
    rope_base: float = 100.0
    head_type: HeadType = "dpt"
    rgb_head: bool = True
    conf_vmin: float = 1.0  # conf_mode ('exp', vmin, inf)
    # DPT widths (hard-coded in the official DPTPts3dPose)
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    # Reproduce the official encoder's float16 rounding of q and k around RoPE.
    encoder_fp16_qk: bool = True

    def __post_init__(self):
        for dim, heads, what in [
            (self.enc_embed_dim, self.enc_num_heads, "encoder"),
            (self.dec_embed_dim, self.dec_num_heads, "image decoder"),
            (self.dec_embed_dim, self.state_dec_num_heads, "state decoder"),
            (self.enc_embed_dim, self.ray_enc_num_heads, "ray-map encoder"),
        ]:
            if dim % heads or (dim // heads) % 4:
                raise ValueError(
                    f"{what}: width {dim} with {heads} heads gives head dim {dim / heads}, "
                    "which must be an integer multiple of 4 for 2-D RoPE"
                )
        if self.head_type not in ("dpt", "linear"):
            raise ValueError(f"head_type must be 'dpt' or 'linear', got {self.head_type!r}")

    @property
    def dec_hooks(self) -> tuple[int, int]:
        """Decoder layers whose outputs feed DPT hooks 1 and 2 (`dec_depth·2//4`, `·3//4`)."""
        return (self.dec_depth * 2 // 4, self.dec_depth * 3 // 4)

    @property
    def state_grid_width(self) -> int:
        w = int(math.isqrt(self.state_size))
        return w + 1 if w % 2 == 1 else w


CUT3R_PRESETS: dict[str, Cut3rConfig] = {
    "cut3r_512_dpt_4_64": Cut3rConfig(),
    "cut3r_224_linear_4": Cut3rConfig(head_type="linear"),
    # Tiny widths used by the parity fixtures and tests.
    "cut3r_tiny": Cut3rConfig(
        enc_embed_dim=128,
        enc_depth=2,
        enc_num_heads=4,
        dec_embed_dim=96,
        dec_depth=4,
        dec_num_heads=3,
        state_dec_num_heads=4,
        state_size=16,
        local_mem_size=16,
        dpt_layer_dims=(8, 16, 32, 64),
        dpt_feature_dim=32,
        dpt_last_dim=16,
    ),
}


def cut3r_preset(name: str) -> Cut3rConfig:
    try:
        return CUT3R_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown CUT3R preset {name!r}; known: {sorted(CUT3R_PRESETS)}") from None


@dataclasses.dataclass(frozen=True)
class Human3rConfig:
    """Human3R = CUT3R + a DINOv2 human-prior encoder on the padded square image (side `img_res`),
    human prompt tokens and SMPL-X heads. Defaults: the released `human3r_896L`.

    max_humans: human slots per frame under jit (the official model appends every detection; with
      more detections than slots the highest-scoring ones are kept and `n_detected` says so).
    track_capacity: tracks remembered for re-identification (the official memory is unbounded).
    """

    cut3r: Cut3rConfig = Cut3rConfig()
    dino: DinoConfig = DINO_PRESETS["dinov2_vitl14"]
    img_res: int = 896
    msk_head: bool = True
    max_humans: int = 16
    det_threshold: float = 0.3
    track_capacity: int = 64

    def __post_init__(self):
        self.dino.grid(self.img_res)  # validates img_res
        if self.max_humans < 1:
            raise ValueError(f"max_humans must be at least 1, got {self.max_humans}")


HUMAN3R_PRESETS: dict[str, Human3rConfig] = {
    "human3r_896L": Human3rConfig(),
    "human3r_672L": Human3rConfig(img_res=672),
    "human3r_672B": Human3rConfig(dino=DINO_PRESETS["dinov2_vitb14"], img_res=672),
    "human3r_672S": Human3rConfig(dino=DINO_PRESETS["dinov2_vits14"], img_res=672),
    # the widths of the tiny parity fixture (its DINOv2 is not a hub model)
    "human3r_tiny": Human3rConfig(
        cut3r=CUT3R_PRESETS["cut3r_tiny"],
        dino=DinoConfig(embed_dim=64, depth=2, num_heads=2),
        img_res=112,
        max_humans=4,
        track_capacity=16,
    ),
}


def preset(name: str) -> Cut3rConfig | Human3rConfig:
    """Any named preset: CUT3R or Human3R."""
    if name in HUMAN3R_PRESETS:
        return HUMAN3R_PRESETS[name]
    if name in CUT3R_PRESETS:
        return CUT3R_PRESETS[name]
    raise KeyError(f"unknown preset {name!r}; known: {sorted(CUT3R_PRESETS) + sorted(HUMAN3R_PRESETS)}")
