"""Official checkpoint → our parameter tree: the model config and one ordered table of key rules.

Each rule maps an official key (regex) to our dotted path and names the transform of the tensor:
  linear  Linear weight [out, in] → kernel [in, out]
  conv    Conv2d weight [O, I, kh, kw] → HWIO
  convT   ConvTranspose2d weight [I, O, k, k] (kernel = stride) → [I, k, k, O]
  copy    as stored (biases, LayerNorm scales, tokens, embeddings)
  alias   a second name of another entry's storage: checked to be identical, not mapped
The first matching rule wins. `plan_mapping` applies the table to the shapes alone and reports every
unmatched, unused, missing or mis-shaped key at once; `apply_plan` then reads and moves the tensors.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from human3r_jax.config import DINO_PRESETS, Cut3rConfig, DinoConfig, Human3rConfig
from human3r_jax.errors import Human3rError


class ConversionError(Human3rError):
    pass


# ---------------------------------------------------------------- config

# Defaults of the official ARCroco3DStereoConfig and CrocoConfig for the arguments we read.
OFFICIAL_DEFAULTS = {
    "output_mode": "pts3d",
    "head_type": "linear",
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
    "pose_mode": ("exp", -math.inf, math.inf),
    "ray_enc_depth": 2,
    "state_size": 324,
    "local_mem_size": 256,
    "state_pe": "2d",
    "state_dec_num_heads": 16,
    "depth_head": False,
    "rgb_head": False,
    "pose_conf_head": False,
    "pose_head": False,
    "patch_size": 16,
    "enc_embed_dim": 768,
    "enc_depth": 12,
    "enc_num_heads": 12,
    "dec_embed_dim": 512,
    "dec_depth": 8,
    "dec_num_heads": 16,
    "mlp_ratio": 4,
    "norm_im2_in_dec": True,
    "pos_embed": "cosine",
}
# Arguments that do not change inference (training flags, asserts-only sizes, unused options).
IGNORED_ARGS = {
    "freeze",
    "landscape_only",
    "patch_embed_cls",
    "img_size",
    "mask_ratio",
    "use_prompt",
    "is_shallow",
    "prompt_size",
}
HUMAN3R_ARGS = {"msk_head", "backbone", "mhmr_img_res"}


def cut3r_config_from_args(kwargs: Mapping[str, Any], shapes: Mapping[str, tuple]) -> Cut3rConfig:
    """Our config from the constructor's keyword arguments plus widths read from tensor shapes."""
    unknown = set(kwargs) - set(OFFICIAL_DEFAULTS) - IGNORED_ARGS - HUMAN3R_ARGS
    if unknown:
        raise ConversionError(f"constructor arguments not understood: {sorted(unknown)}")
    a = {**OFFICIAL_DEFAULTS, **kwargs}

    def require(cond, msg):
        if not cond:
            raise ConversionError(msg)

    require(
        a["output_mode"] in ("pts3d+pose", "pts3d+pose+smpl"),
        f"output_mode={a['output_mode']!r} is not supported (CUT3R 'pts3d+pose' or Human3R 'pts3d+pose+smpl')",
    )
    require(a["pose_head"], "pose_head=False is not supported: the released models have a pose head")
    require(not a["depth_head"] and not a["pose_conf_head"], "depth_head / pose_conf_head are not supported")
    require(str(a["pos_embed"]).startswith("RoPE"), f"pos_embed={a['pos_embed']!r}: only RoPE models are supported")
    require(a["norm_im2_in_dec"] is True, "norm_im2_in_dec=False is not supported")
    require(a["head_type"] in ("dpt", "linear"), f"head_type={a['head_type']!r} is not supported")
    require(a["state_pe"] in ("2d", "1d"), f"state_pe={a['state_pe']!r} is not supported")
    unbounded = ("exp", -math.inf, math.inf)
    for k in ("depth_mode", "pose_mode"):
        require(tuple(a[k]) == unbounded, f"{k}={a[k]!r}: only ('exp', -inf, inf) is supported")
    conf = tuple(a["conf_mode"])
    require(
        len(conf) == 3 and conf[0] == "exp" and conf[2] == math.inf,
        f"conf_mode={a['conf_mode']!r}: only ('exp', vmin, inf) is supported",
    )
    fields = {
        "patch_size": a["patch_size"],
        "enc_embed_dim": a["enc_embed_dim"],
        "enc_depth": a["enc_depth"],
        "enc_num_heads": a["enc_num_heads"],
        "dec_embed_dim": a["dec_embed_dim"],
        "dec_depth": a["dec_depth"],
        "dec_num_heads": a["dec_num_heads"],
        "state_dec_num_heads": a["state_dec_num_heads"],
        "mlp_ratio": float(a["mlp_ratio"]),
        "state_size": a["state_size"],
        "state_pe": a["state_pe"],
        "local_mem_size": a["local_mem_size"],
        "ray_enc_depth": a["ray_enc_depth"],
        "rope_base": float(str(a["pos_embed"])[len("RoPE") :]),
        "head_type": a["head_type"],
        "rgb_head": bool(a["rgb_head"]),
        "conf_vmin": float(conf[1]),
    }
    if a["head_type"] == "dpt":
        p = "downstream_head.dpt_self."
        try:
            fields["dpt_layer_dims"] = tuple(shapes[f"{p}act_postprocess.{k}.0.weight"][0] for k in range(4))
            fields["dpt_feature_dim"] = shapes[f"{p}scratch.layer1_rn.weight"][0]
            fields["dpt_last_dim"] = shapes[f"{p}head.2.weight"][0]
        except KeyError as e:
            raise ConversionError(f"DPT head key {e.args[0]} is missing: cannot read the DPT widths") from None
    try:
        return Cut3rConfig(**fields)
    except ValueError as e:
        raise ConversionError(str(e)) from None


def human3r_config_from_args(
    kwargs: Mapping[str, Any], shapes: Mapping[str, tuple], dino: DinoConfig | None = None
) -> Human3rConfig:
    """Human3R config: the CUT3R part as above, the DINOv2 from `backbone` (a hub name; `dino`
    overrides it for non-standard backbones), `mhmr_img_res` and `msk_head`."""
    cut3r = cut3r_config_from_args(kwargs, shapes)
    name = kwargs.get("backbone", "dinov2_vitl14")
    if dino is None:
        if name not in DINO_PRESETS:
            raise ConversionError(
                f"backbone {name!r} is not a known DINOv2 ({sorted(DINO_PRESETS)}); "
                "give its widths (embed_dim, depth, num_heads) as an override"
            )
        dino = DINO_PRESETS[name]
    if "mhmr_img_res" not in kwargs or kwargs["mhmr_img_res"] is None:
        raise ConversionError("a Human3R constructor needs mhmr_img_res (the human-prior input side)")
    try:
        return Human3rConfig(
            cut3r=cut3r, dino=dino, img_res=int(kwargs["mhmr_img_res"]), msk_head=bool(kwargs.get("msk_head", False))
        )
    except ValueError as e:
        raise ConversionError(str(e)) from None


# ---------------------------------------------------------------- key rules


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str
    target: str | Callable[[re.Match], str]
    transform: str = "auto"  # auto: linear for 2-D '.weight', conv for 4-D '.weight', else copy


CUT3R_RULES: list[Rule] = [
    Rule(r"^downstream_head\.(dpt_\w+)\.scratch\.layer_rn\.(\d)\.weight$", "", "alias"),
    Rule(r"^patch_embed\.proj\.", r"encoder.patch_embed.proj."),
    Rule(r"^enc_blocks\.", r"encoder.blocks."),
    Rule(r"^enc_norm\.", r"encoder.norm."),
    Rule(r"^patch_embed_ray_map\.proj\.", r"ray_encoder.patch_embed.proj."),
    Rule(r"^enc_blocks_ray_map\.", r"ray_encoder.blocks."),
    Rule(r"^enc_norm_ray_map\.", r"ray_encoder.norm."),
    Rule(r"^register_tokens\.weight$", "register_tokens", "copy"),
    Rule(r"^decoder_embed_state\.", r"state_embed."),
    Rule(r"^decoder_embed\.", r"decoder.embed."),
    Rule(r"^dec_blocks_state\.", r"decoder.state_blocks."),
    Rule(r"^dec_norm_state\.", r"decoder.state_norm."),
    Rule(r"^dec_blocks\.", r"decoder.img_blocks."),
    Rule(r"^dec_norm\.", r"decoder.img_norm."),
    Rule(r"^(pose_token|masked_img_token|masked_ray_map_token)$", r"\1", "copy"),
    Rule(r"^pose_retriever\.(mem|masked_token)$", r"pose_retriever.\1", "copy"),
    Rule(r"^pose_retriever\.", r"pose_retriever."),
    Rule(r"^downstream_head\.pose_head\.mlp\.", r"head.pose_head."),
    Rule(r"^downstream_head\.final_transform\.(\d+)\.(norm\d)\.mlp\.1\.", r"head.final_transform.\1.\2.linear."),
    Rule(r"^downstream_head\.final_transform\.", r"head.final_transform."),
    # DPT heads
    Rule(
        r"^downstream_head\.(dpt_\w+)\.act_postprocess\.([01])\.1\.weight$",
        r"head.\1.reassemble.\2.resample.kernel",
        "convT",
    ),
    Rule(r"^downstream_head\.(dpt_\w+)\.act_postprocess\.(\d)\.0\.", r"head.\1.reassemble.\2.conv."),
    Rule(r"^downstream_head\.(dpt_\w+)\.act_postprocess\.(\d)\.1\.", r"head.\1.reassemble.\2.resample."),
    Rule(r"^downstream_head\.(dpt_\w+)\.scratch\.layer(\d)_rn\.", lambda m: f"head.{m[1]}.layer_rn.{int(m[2]) - 1}."),
    Rule(
        r"^downstream_head\.(dpt_\w+)\.scratch\.refinenet(\d)\.resConfUnit(\d)\.",
        lambda m: f"head.{m[1]}.refinenet.{int(m[2]) - 1}.rcu{m[3]}.",
    ),
    Rule(
        r"^downstream_head\.(dpt_\w+)\.scratch\.refinenet(\d)\.out_conv\.",
        lambda m: f"head.{m[1]}.refinenet.{int(m[2]) - 1}.out_conv.",
    ),
    Rule(r"^downstream_head\.(dpt_\w+)\.head\.([024])\.", lambda m: f"head.{m[1]}.head_conv{int(m[2]) // 2 + 1}."),
    # linear head
    Rule(r"^downstream_head\.(proj|rgb_proj|cross_proj)\.", r"head.\1."),
]

# Human3R adds a DINOv2 (its position table is resized to the model's input before mapping), the
# detection and fusion MLPs, the SMPL-X regressors with their initial values, and padding tokens.
HUMAN3R_RULES: list[Rule] = CUT3R_RULES + [
    Rule(r"^backbone\.encoder\.(cls_token|pos_embed|mask_token)$", r"backbone.\1", "copy"),
    Rule(r"^backbone\.encoder\.", r"backbone."),
    Rule(r"^(masked_smpl_token|mhmr_masked_smpl_token|mhmr_masked_img_token)$", r"\1", "copy"),
    Rule(r"^downstream_head\.(mlp_classif|mlp_offset)\.0\.", r"human.\1.fc1."),
    Rule(r"^downstream_head\.(mlp_classif|mlp_offset)\.2\.", r"human.\1.fc2."),
    Rule(
        r"^downstream_head\.(mlp_msk|mlp_fuse|decpose|decshape|decexpression|deccam)\.mlp\.layers\.0\.",
        r"human.\1.fc1.",
    ),
    Rule(
        r"^downstream_head\.(mlp_msk|mlp_fuse|decpose|decshape|decexpression|deccam)\.mlp\.layers\.2\.",
        r"human.\1.fc2.",
    ),
    Rule(r"^downstream_head\.(init_\w+)$", r"human.\1", "copy"),
]


def _leaf(path: str, target_leaves: Mapping[str, tuple]) -> str:
    """A module prefix + official leaf name → our leaf ('weight' is a kernel or a LayerNorm scale)."""
    prefix, _, leaf = path.rpartition(".")
    if leaf == "bias":
        return path
    if leaf == "weight":
        return f"{prefix}.kernel" if f"{prefix}.kernel" in target_leaves else f"{prefix}.scale"
    return path


def _kind(rule: Rule, key: str, ndim: int) -> str:
    if rule.transform != "auto":
        return rule.transform
    if key.endswith(".weight"):
        return {2: "linear", 4: "conv"}.get(ndim, "copy")
    return "copy"


_PERMS = {"linear": (1, 0), "conv": (2, 3, 1, 0), "convT": (0, 2, 3, 1)}


def transform(kind: str, x: np.ndarray) -> np.ndarray:
    return x.transpose(_PERMS[kind]) if kind in _PERMS else x


def _transformed_shape(kind: str, shape: tuple) -> tuple:
    return tuple(shape[i] for i in _PERMS[kind]) if kind in _PERMS and len(shape) == len(_PERMS[kind]) else shape


def match_rule(key: str, rules: list[Rule]):
    for rule in rules:
        m = re.match(rule.pattern, key)
        if m:
            return rule, m
    return None, None


def _alias_source(key: str) -> str:
    return re.sub(r"\.scratch\.layer_rn\.(\d)\.", lambda m: f".scratch.layer{int(m[1]) + 1}_rn.", key)


@dataclasses.dataclass
class Plan:
    """Where every official key goes: {our path: (official key, transform)} and alias pairs."""

    moves: dict[str, tuple[str, str]]
    aliases: list[tuple[str, str]]


def plan_mapping(
    shapes: Mapping[str, tuple], target: Mapping[str, tuple], rules: list[Rule], source: str = "checkpoint"
) -> Plan:
    """Check official keys/shapes against our tree; raise ConversionError listing every problem."""
    moves: dict[str, tuple[str, str]] = {}
    aliases = []
    unmatched, unknown, misshaped, duplicate, bad_alias = [], [], [], [], []
    for key, shape in shapes.items():
        shape = tuple(shape)
        rule, m = match_rule(key, rules)
        if rule is None:
            unmatched.append(key)
            continue
        if rule.transform == "alias":
            src = _alias_source(key)
            if src not in shapes:
                bad_alias.append(f"{key} (its source {src} is missing)")
            elif tuple(shapes[src]) != shape:
                bad_alias.append(f"{key} {shape} differs in shape from {src} {tuple(shapes[src])}")
            else:
                aliases.append((key, src))
            continue
        path = (rule.target(m) if callable(rule.target) else m.expand(rule.target)) + key[m.end() :]
        path = _leaf(path, target)
        if path not in target:
            unknown.append(f"{key} -> {path}")
            continue
        if path in moves:
            duplicate.append(f"{key} and {moves[path][0]} -> {path}")
            continue
        kind = _kind(rule, key, len(shape))
        got = _transformed_shape(kind, shape)
        if got != tuple(target[path]):
            misshaped.append(f"{key}: {shape} -> {path} {got}, expected {tuple(target[path])}")
            continue
        moves[path] = (key, kind)
    missing = sorted(set(target) - set(moves))
    _raise_if(
        source,
        [
            ("mis-shaped", misshaped),
            ("no rule for", unmatched),
            ("no such parameter", unknown),
            ("mapped twice", duplicate),
            ("broken alias", bad_alias),
            ("missing", missing),
        ],
    )
    return Plan(moves, aliases)


def _raise_if(source: str, groups) -> None:
    problems = []
    for title, items in groups:
        if items:
            shown = "\n    ".join(items[:40]) + (f"\n    … and {len(items) - 40} more" if len(items) > 40 else "")
            problems.append(f"  {title} ({len(items)}):\n    {shown}")
    if problems:
        raise ConversionError(f"{source}: the state_dict does not fit the model:\n" + "\n".join(problems))


def apply_plan(
    plan: Plan,
    read: Callable[[str], np.ndarray],
    source: str = "checkpoint",
    same_view: Callable[[str, str], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Read (`read(key)`) and transform the planned entries → {our path: float32 array}. Only planned entries
    are read. An alias must be the same view of its source's storage (`same_view`) or hold identical values."""
    bad = [
        f"{a} differs from {src}"
        for a, src in plan.aliases
        if not (same_view and same_view(a, src)) and not np.array_equal(read(a), read(src))
    ]
    _raise_if(source, [("broken alias", bad)])
    return {
        path: np.array(transform(kind, read(key)), dtype=np.float32, order="C")
        for path, (key, kind) in plan.moves.items()
    }
