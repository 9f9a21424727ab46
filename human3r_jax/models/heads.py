"""CUT3R's output heads: pose head, `final_transform`, DPT or linear point heads,
and the output activations. Feature maps are NHWC; the heads run in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from human3r_jax.config import Cut3rConfig
from human3r_jax.models.layers import Mlp, ModulationBlock

# ---------------------------------------------------------------- activations


def depth_exp(xyz, pos_z: bool = False):
    """'exp' point map: v/max(‖v‖, 1e-8)·expm1(‖v‖); with pos_z, v is first multiplied by sign(z)."""
    if pos_z:
        xyz = xyz * jnp.sign(xyz[..., 2:3])
    d = jnp.linalg.norm(xyz, axis=-1, keepdims=True)
    return xyz / jnp.maximum(d, 1e-8) * jnp.expm1(d)


def conf_exp(x, vmin: float):
    return vmin + jnp.exp(x)


def rgb_act(x, eps: float = 1e-6):
    return (jax.nn.sigmoid(x) * (1 - 2 * eps) + eps - 0.5) * 2


def pose_act(raw):
    """raw [B, 7] = (t, q) -> camera-to-world (t·expm1(‖t‖)/‖t‖, q/‖q‖ with q_w ≥ 0)."""
    t, q = raw[..., :3], raw[..., 3:7]
    d = jnp.linalg.norm(t, axis=-1, keepdims=True)
    t = t * (jnp.expm1(d) / jnp.maximum(d, 1e-8))
    q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    q = jnp.where(q[..., :1] < 0, -q, q)
    return jnp.concatenate([t, q], axis=-1)


# ---------------------------------------------------------------- DPT


def _conv(cin, cout, k, rngs, stride=1, bias=True):
    pad = (k - 1) // 2
    return nnx.Conv(
        cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)), use_bias=bias, rngs=rngs
    )


class ConvTranspose(nnx.Module):
    """Transposed convolution with kernel = stride and no padding: each input pixel maps to its own
    k×k output block, so it is a per-pixel Dense followed by depth-to-space. kernel [Cin, k, k, Cout]."""

    def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (cin, k, k, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,)))

    def __call__(self, x):
        b, h, w, _ = x.shape
        _, k, _, cout = self.kernel.shape
        y = jnp.einsum("bhwc,cijo->bhiwjo", x, self.kernel[...])
        return y.reshape(b, h * k, w * k, cout) + self.bias[...]


def _lerp_indices(n_in: int, n_out: int):
    """Source indices and weights of PyTorch's bilinear resize with align_corners=True (float32 math)."""
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
    src = scale * np.arange(n_out, dtype=np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def upsample2x(x):
    """Bilinear ×2 upsampling with align_corners=True on [B, H, W, C]."""
    _, h, w, _ = x.shape
    i0, i1, lam = _lerp_indices(w, 2 * w)
    lam = lam[:, None]
    x = x[:, :, i0] * (1 - lam) + x[:, :, i1] * lam
    i0, i1, lam = _lerp_indices(h, 2 * h)
    lam = lam[:, None, None]
    return x[:, i0] * (1 - lam) + x[:, i1] * lam


class ResidualConvUnit(nnx.Module):
    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(c, c, 3, rngs)
        self.conv2 = _conv(c, c, 3, rngs)

    def __call__(self, x):
        return x + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


class FusionBlock(nnx.Module):
    """z = a + RCU₁(b) (if b is given); z = RCU₂(z); bilinear ×2; 1×1 conv."""

    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.rcu1 = ResidualConvUnit(c, rngs=rngs)
        self.rcu2 = ResidualConvUnit(c, rngs=rngs)
        self.out_conv = _conv(c, c, 1, rngs)

    def __call__(self, a, b=None):
        if b is not None:
            a = a + self.rcu1(b)
        return self.out_conv(upsample2x(self.rcu2(a)))


class Reassemble(nnx.Module):
    """act_postprocess[k]: 1×1 conv to the hook's width, then a resampling (×4, ×2, none or /2)."""

    def __init__(self, cin: int, cout: int, mode: str, *, rngs: nnx.Rngs):
        self.conv = _conv(cin, cout, 1, rngs)
        if mode == "up4":
            self.resample = ConvTranspose(cout, cout, 4, rngs=rngs)
        elif mode == "up2":
            self.resample = ConvTranspose(cout, cout, 2, rngs=rngs)
        elif mode == "down2":
            self.resample = _conv(cout, cout, 3, rngs, stride=2)
        else:
            self.resample = None

    def __call__(self, x):
        x = self.conv(x)
        return x if self.resample is None else self.resample(x)


class DPT(nnx.Module):
    """DPT output adapter (DUSt3R's `DPTOutputAdapter_fix`) with hooks [F, X^a, X^b, X̂]."""

    def __init__(self, cfg: Cut3rConfig, out_channels: int, *, rngs: nnx.Rngs):
        dims_in = (cfg.enc_embed_dim,) + (cfg.dec_embed_dim,) * 3
        ld, fd = cfg.dpt_layer_dims, cfg.dpt_feature_dim
        self.reassemble = nnx.List(
            [Reassemble(dims_in[k], ld[k], mode, rngs=rngs) for k, mode in enumerate(("up4", "up2", "none", "down2"))]
        )
        self.layer_rn = nnx.List([_conv(ld[k], fd, 3, rngs, bias=False) for k in range(4)])
        self.refinenet = nnx.List([FusionBlock(fd, rngs=rngs) for _ in range(4)])  # refinenet1..4
        self.head_conv1 = _conv(fd, fd // 2, 3, rngs)
        self.head_conv2 = _conv(fd // 2, cfg.dpt_last_dim, 3, rngs)
        self.head_conv3 = _conv(cfg.dpt_last_dim, out_channels, 1, rngs)

    def __call__(self, hooks, grid):
        """hooks: 4 token maps [B, h·w, C_k]; grid (h, w) -> raw output [B, 16h, 16w, C]."""
        h, w = grid
        layers = [
            rn(re(t.reshape(t.shape[0], h, w, t.shape[-1]))) for t, re, rn in zip(hooks, self.reassemble, self.layer_rn)
        ]
        r1, r2, r3, r4 = self.refinenet
        path = r4(layers[3])[:, : layers[2].shape[1], : layers[2].shape[2]]
        path = r3(path, layers[2])
        path = r2(path, layers[1])
        path = r1(path, layers[0])
        x = upsample2x(self.head_conv1(path))
        return self.head_conv3(jax.nn.relu(self.head_conv2(x)))


# ---------------------------------------------------------------- shared pose / final_transform


class PoseAndTransform(nnx.Module):
    """Pose head (MLP on the normed pose token) and `final_transform` (two ModLN blocks on the image
    tokens conditioned on the pose token), shared by both head types."""

    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs):
        d = cfg.dec_embed_dim
        self.pose_head = Mlp(d, 4 * d, 7, rngs=rngs)
        self.final_transform = nnx.List(
            [ModulationBlock(d, cfg.dec_num_heads, 4.0, rope_base=cfg.rope_base, rngs=rngs) for _ in range(2)]
        )

    def pose(self, pose_token):
        return self.pose_head(pose_token)

    def transform(self, tokens, pose_token, pos):
        for blk in self.final_transform:
            tokens = blk(tokens, pose_token, pos)
        return tokens


class DptHead(PoseAndTransform):
    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.conf_vmin = cfg.conf_vmin
        self.dpt_self = DPT(cfg, 4, rngs=rngs)
        self.dpt_cross = DPT(cfg, 4, rngs=rngs)
        self.dpt_rgb = DPT(cfg, 3, rngs=rngs) if cfg.rgb_head else None

    def __call__(self, enc, x_a, x_b, x_final, pos, grid, *, rgb=True, cross=True, taps=None):
        """enc [B,N,De]; x_a, x_b [B,N,D] (hook layers, pose token dropped); x_final [B,1+N,D] (normed)."""
        pose_tok, tokens = x_final[:, 0], x_final[:, 1:]
        raw_pose = self.pose(pose_tok)
        out = {"camera_pose": pose_act(raw_pose)}
        hooks = [enc, x_a, x_b, tokens]
        raw = self.dpt_self(hooks, grid)
        out["pts3d_in_self_view"] = depth_exp(raw[..., :3])
        out["conf_self"] = conf_exp(raw[..., 3], self.conf_vmin)
        if taps is not None:
            taps.update(pose_raw=raw_pose, dpt_self_raw=raw)
        if rgb and self.dpt_rgb is not None:
            raw = self.dpt_rgb(hooks, grid)
            out["rgb"] = rgb_act(raw)
            if taps is not None:
                taps["dpt_rgb_raw"] = raw
        if cross:
            t_cross = self.transform(tokens, pose_tok, pos)
            raw = self.dpt_cross(hooks[:3] + [t_cross], grid)
            out["pts3d_in_other_view"] = depth_exp(raw[..., :3])
            out["conf"] = conf_exp(raw[..., 3], self.conf_vmin)
            if taps is not None:
                taps.update(final_transform_out=t_cross, dpt_cross_raw=raw)
        return out


# ---------------------------------------------------------------- linear head


def pixel_shuffle(tokens, grid, patch: int):
    """[B, h·w, C·p·p] (channel-major, then row, then column in the patch) -> [B, h·p, w·p, C]."""
    h, w = grid
    b, _, f = tokens.shape
    c = f // (patch * patch)
    x = tokens.reshape(b, h, w, c, patch, patch).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * patch, w * patch, c)


class LinearHead(PoseAndTransform):
    """`LinearPts3dPose`: per-token MLPs to p×p pixels of each output, then a pixel shuffle."""

    def __init__(self, cfg: Cut3rConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        d, pp = cfg.dec_embed_dim, cfg.patch_size**2
        self.patch = cfg.patch_size
        self.conf_vmin = cfg.conf_vmin
        self.proj = Mlp(d, 4 * d, 4 * pp, rngs=rngs)
        self.rgb_proj = Mlp(d, 4 * d, 3 * pp, rngs=rngs) if cfg.rgb_head else None
        self.cross_proj = Mlp(d, 4 * d, 4 * pp, rngs=rngs)

    def __call__(self, enc, x_a, x_b, x_final, pos, grid, *, rgb=True, cross=True, taps=None):
        del enc, x_a, x_b  # the linear head reads only the last decoder output
        pose_tok, tokens = x_final[:, 0], x_final[:, 1:]
        raw_pose = self.pose(pose_tok)
        out = {"camera_pose": pose_act(raw_pose)}
        feat = self.proj(tokens)
        raw = pixel_shuffle(feat, grid, self.patch)
        out["pts3d_in_self_view"] = depth_exp(raw[..., :3], pos_z=True)
        out["conf_self"] = conf_exp(raw[..., 3], self.conf_vmin)
        if taps is not None:
            taps.update(pose_raw=raw_pose, lin_self_tokens=feat, lin_self_raw=raw)
        if rgb and self.rgb_proj is not None:
            feat = self.rgb_proj(tokens)
            raw = pixel_shuffle(feat, grid, self.patch)
            out["rgb"] = rgb_act(raw)
            if taps is not None:
                taps.update(lin_rgb_tokens=feat, lin_rgb_raw=raw)
        if cross:
            t_cross = self.transform(tokens, pose_tok, pos)
            feat = self.cross_proj(t_cross)
            raw = pixel_shuffle(feat, grid, self.patch)
            out["pts3d_in_other_view"] = depth_exp(raw[..., :3])
            out["conf"] = conf_exp(raw[..., 3], self.conf_vmin)
            if taps is not None:
                taps.update(final_transform_out=t_cross, lin_cross_tokens=feat, lin_cross_raw=raw)
        return out


def make_head(cfg: Cut3rConfig, rngs: nnx.Rngs):
    return DptHead(cfg, rngs=rngs) if cfg.head_type == "dpt" else LinearHead(cfg, rngs=rngs)
