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
class Cut3rConfig:
    """CUT3R (`ARCroco3DStereo` with `output_mode='pts3d+pose'`).

    Defaults are the released `cut3r_512_dpt_4_64` model (spec §1.1).
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
    # Reproduce the official encoder's float16 rounding of q and k around RoPE (spec §3.3).
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
        enc_embed_dim=128, enc_depth=2, enc_num_heads=4, dec_embed_dim=96, dec_depth=4,
        dec_num_heads=3, state_dec_num_heads=4, state_size=16, local_mem_size=16,
        dpt_layer_dims=(8, 16, 32, 64), dpt_feature_dim=32, dpt_last_dim=16,
    ),
}


def cut3r_preset(name: str) -> Cut3rConfig:
    try:
        return CUT3R_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown CUT3R preset {name!r}; known: {sorted(CUT3R_PRESETS)}") from None
