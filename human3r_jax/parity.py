"""Parity of our port against a fixture made by running the official PyTorch code.

A fixture folder holds `checkpoint.pth`, `config.json`, `inputs.npz`, `outputs.npz` and
`intermediates.npz` (the arrays `load_fixture` reads). The model config comes from the checkpoint
(constructor string + tensor shapes); only the run settings come from `config.json`. Every output
and intermediate that we produce is compared by relative L2 error ‖ours − ref‖ / ‖ref‖ over all
views; rows are listed in data-flow order so the first failing row names the first stage that departs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from human3r_jax import checkpoint as ckpt
from human3r_jax import runtime
from human3r_jax.config import DinoConfig, Human3rConfig
from human3r_jax.converters.convert import convert_file
from human3r_jax.errors import Human3rError
from human3r_jax.models import state_update
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.npz import read_npz

FILES = ("checkpoint.pth", "config.json", "inputs.npz", "outputs.npz", "intermediates.npz")
# Pixels whose raw z is this close to 0 may flip sign under float32 noise (linear head, pos_z).
POS_Z_EPS = 1e-5

STAGES = [
    "patch_embed",
    "patch_pos",
    r"enc_block\d+",
    "enc_out",
    "dino_input",
    "dino_pos_embed",
    "dino_patch_embed",
    r"dino_block\d+",
    "dino_tokens",
    "det_logits",
    "smpl_scores",
    "n_humans",
    "det_offset",
    "smpl_loc",
    "human_pos",
    "fuse_in",
    "human_prompt",
    "dec_embed_img",
    "state_init",
    "mem_init",
    "state_in",
    "mem_in",
    "state_pos",
    "pose_query",
    "dec_in_tokens",
    "dec_in_pos",
    r"dec_state_l\d+",
    r"dec_img_l\d+",
    "dec_img_final",
    r"ttt3r_\w+",
    "state_candidate",
    "mem_candidate",
    "pose_raw",
    "final_transform_out",
    r"dpt_\w+_raw",
    r"lin_\w+_tokens",
    r"lin_\w+_raw",
    "camera_pose",
    "pts3d_in_self_view",
    "conf_self",
    "rgb",
    "pts3d_in_other_view",
    "conf",
    "smpl_readout",
    r"dec\w+_raw",
    "smpl_rotmat",
    "smpl_shape",
    "smpl_expression",
    "smpl_transl",
    "smpl_id",
    "msk",
    "state_out",
    "mem_out",
    r"post_\w+",
    "smplx_faces",
]


class FixtureError(Human3rError):
    pass


@dataclasses.dataclass
class Row:
    name: str
    rel: float
    max_abs: float
    tol: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.rel <= self.tol)


@dataclasses.dataclass
class Report:
    fixture: str
    rows: list[Row]
    skipped: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def first_failure(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def table(self) -> str:
        lines = [
            f"parity: {self.fixture}",
            f"{'stage / output':28s} {'rel L2':>10s} {'max |diff|':>11s} {'tol':>8s}  ok",
        ]
        for r in self.rows:
            lines.append(
                f"{r.name:28s} {r.rel:10.2e} {r.max_abs:11.2e} {r.tol:8.0e}  {'yes' if r.ok else 'NO'}"
                + (f"  ({r.note})" if r.note else "")
            )
        if self.skipped:
            lines.append(f"not compared: {', '.join(self.skipped)}")
        lines.extend(f"note: {n}" for n in self.notes)
        worst = max(self.rows, key=lambda r: r.rel / r.tol)
        first = self.first_failure()
        lines.append(
            f"{len(self.rows)} compared, worst {worst.name} {worst.rel:.2e}; "
            + ("PASS" if self.ok else f"FAIL (first departure: {first.name})")
        )
        return "\n".join(lines)


def _stage_rank(name: str) -> int:
    for i, pat in enumerate(STAGES):
        if re.fullmatch(pat, name):
            return i
    return len(STAGES)


def rel_error(ours, ref, mask=None, floor: float = 0.0) -> tuple[float, float]:
    """Relative L2 error (denominator at least `floor`·√n) and max |diff|; exact match for integers."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise FixtureError(f"shape {ours.shape} vs reference {ref.shape}")
    if mask is not None:
        ours, ref = ours[mask], ref[mask]
    diff = ours - ref
    norm = np.linalg.norm(ref)
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    if np.issubdtype(np.asarray(ref).dtype, np.integer):
        return (0.0 if max_abs == 0 else np.inf), max_abs
    denom = max(norm, floor * np.sqrt(diff.size))
    return float(np.linalg.norm(diff) / denom) if denom > 0 else float(np.linalg.norm(diff)), max_abs


def load_fixture(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise FixtureError(f"{path}: not a fixture folder")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FixtureError(f"{path}: missing {', '.join(missing)} (a fixture holds {', '.join(FILES)})")
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise FixtureError(f"{path / 'config.json'}: cannot read as JSON ({e})") from None
    arrays = {name: read_npz(path / f"{name}.npz", FixtureError) for name in ("inputs", "outputs", "intermediates")}
    return {"path": path, "config": cfg, **arrays}


def _views(inputs: dict) -> Frame:
    try:
        img = inputs["img"].transpose(0, 2, 3, 1)[:, None]  # [V, 1, H, W, 3]
        v = img.shape[0]
        update = inputs.get("update", np.ones(v, bool)) & inputs.get("img_mask", np.ones(v, bool))
        reset = inputs.get("reset", np.zeros(v, bool))
    except KeyError as e:
        raise FixtureError(f"inputs.npz: missing key {e.args[0]}") from None
    return Frame(jnp.asarray(img, jnp.float32), jnp.asarray(update[:, None]), jnp.asarray(reset[:, None]))


def _dino_override(fcfg: dict) -> DinoConfig | None:
    """DINOv2 widths that neither the constructor name nor the tensor shapes give (config.json)."""
    over = (fcfg.get("width_overrides") or {}).get("dinov2") or {}
    if not over:
        return None
    ((_name, d),) = over.items()
    return DinoConfig(
        embed_dim=d["embed_dim"],
        depth=d["depth"],
        num_heads=d["num_heads"],
        patch_size=d.get("patch_size", 14),
        mlp_ratio=d.get("mlp_ratio", 4),
        interpolate_offset=d.get("interpolate_offset", 0.1),
    )


# Per-human arrays ([V, nmax, …] in the fixture, zero-padded) and decoder sequences ([V, 1+N+nmax, …]).
HUMAN_KEYS = (
    "smpl_loc",
    "smpl_rotmat",
    "smpl_shape",
    "smpl_expression",
    "smpl_transl",
    "det_offset",
    "fuse_in",
    "human_prompt",
    "smpl_readout",
    "decpose_raw",
    "decshape_raw",
    "decexpression_raw",
    "deccam_raw",
    "human_pos",
)
SEQUENCE_KEYS = ("dec_in_tokens", "dec_in_pos", "dec_img_final", r"dec_img_l\d+")


def _slots_like(ours: np.ndarray, valid: np.ndarray, nmax: int, fill=0):
    """Our slot arrays [V, S, …] → the fixture's layout [V, nmax, …] (empty slots → fill)."""
    mask = valid.reshape(valid.shape + (1,) * (ours.ndim - 2))
    return np.where(mask, ours, fill)[:, :nmax]


def _human_views(ours: dict, refs: dict, n_img: int) -> tuple[dict, list[str]]:
    """Bring our per-slot arrays into the fixture's zero-padded layout, if the human counts agree."""
    valid = ours["smpl_valid"]
    n_ours, n_ref = valid.sum(1), refs["n_humans"]
    nmax = int(n_ref.max()) if len(n_ref) else 0
    if not np.array_equal(n_ours, n_ref):
        return {}, [
            f"human counts differ (ours {[int(n) for n in n_ours]}, reference {[int(n) for n in n_ref]}): "
            "per-human rows not compared"
        ]
    if valid.shape[1] < nmax:
        raise FixtureError(f"the fixture has {nmax} humans in a view, more than our {valid.shape[1]} slots")
    out = {k: _slots_like(ours[k], valid, nmax) for k in HUMAN_KEYS if k in ours}
    out["smpl_id"] = _slots_like(ours["smpl_id"], valid, nmax, fill=-1)
    k = 1 + n_img + nmax
    keep = np.concatenate([np.ones((len(valid), 1 + n_img), bool), valid[:, :nmax]], axis=1)
    for name, a in ours.items():
        if any(re.fullmatch(p, name) for p in SEQUENCE_KEYS):
            out[name] = np.where(keep.reshape(keep.shape + (1,) * (a.ndim - 2)), a[:, :k], 0)
    return out, []


def _human_rows(ours: dict, out: dict, refs: dict, post: dict, hw, smplx_path) -> list[str]:
    """Put the per-human arrays and the demo's body post-processing into `ours`, in the fixture's
    layout; where the human counts differ, drop everything that depends on them. Returns notes."""
    per_human, notes = _human_views(ours, refs, ours["patch_embed"].shape[1])
    if notes:  # counts differ: nothing that depends on them can be compared
        for k in [
            k for k in ours if k in HUMAN_KEYS or k == "smpl_id" or any(re.fullmatch(p, k) for p in SEQUENCE_KEYS)
        ]:
            del ours[k]
        return notes
    ours.update(per_human)
    smplx = None
    if smplx_path is not None:
        from human3r_jax.models.smplx import load_smplx

        smplx = load_smplx(smplx_path)
    else:
        notes.append("no SMPL-X model given (--smplx): body vertices and joints not compared")
    nmax = int(refs["n_humans"].max())
    for k, v in runtime.postprocess_humans(out, post["view_index"], post["c2w"], hw, smplx).items():
        name = k if k == "smplx_faces" else f"post_{k}"
        ours[name] = v[:, :nmax] if v.ndim >= 2 and k.startswith("smpl_") else v
    return notes


def run_fixture(
    path: str | Path, tol: float = 1e-4, tols: dict[str, float] | None = None, smplx_path: str | Path | None = None
) -> Report:
    """Convert, run and compare one fixture. `smplx_path`: an SMPL-X model (the synthetic file the
    fixture used) to also compare the bodies' vertices and joints."""
    fx = load_fixture(path)
    fcfg, inputs, outputs, inter = fx["config"], fx["inputs"], fx["outputs"], fx["intermediates"]
    kind = fcfg.get("kind", "cut3r")
    if kind not in ("cut3r", "human3r"):
        raise FixtureError(f"{path}: unknown fixture kind {kind!r}")
    run = fcfg.get("input", {})
    cfg, params, _ = convert_file(fx["path"] / "checkpoint.pth", _dino_override(fcfg))
    human = isinstance(cfg, Human3rConfig)
    graphdef, state = ckpt.params_into(ckpt.abstract_model(cfg), params)
    # Human3R's online loop (`inference_recurrent_lighter`) restarts from the pose token after a
    # reset and its demo chains the segments; CUT3R's `forward_recurrent` reads the reset pose memory.
    human3r_loop = "lighter" in str(fcfg.get("official", {}).get("loop", "")) or kind == "human3r"
    rule = state_update.ttt3r if run.get("use_ttt3r", False) else state_update.cut3r
    opts = StepOptions(rgb=True, cross=True, state_update=rule, pose_token_after_reset=human3r_loop, taps=True)
    frames = _views(inputs)
    carry0 = runtime.init_carry(graphdef, state, 1)
    _, out = runtime.run_sequence(graphdef, state, carry0, frames, opts)
    out = jax.tree.map(lambda a: np.asarray(a)[:, 0], out)  # drop the batch axis: [V, ...]
    taps = out.pop("taps")
    ours = {**taps, **out}
    ours["state_pos"] = taps["state_pos"][0]
    ours["state_init"] = np.asarray(carry0.state_init[0])
    ours["mem_init"] = np.asarray(carry0.mem_init[0])
    for k in list(ours):
        if re.fullmatch(r"(dpt|lin)_\w+_raw", k) or k == "dino_input":
            ours[k] = ours[k].transpose(0, 3, 1, 2)  # NHWC → the fixture's NCHW
    if human:
        ours["dino_pos_embed"] = np.asarray(state["backbone"]["pos_embed"][...])[0]

    notes, masks = [], {}
    if (cfg.cut3r if human else cfg).head_type == "linear":
        # The official pos_z multiplies xyz by sign(z) in place, so the hooked raw map carries it.
        raw = ours["lin_self_raw"]
        sign = np.sign(raw[:, 2:3])
        ours["lin_self_raw"] = np.concatenate([raw[:, :3] * sign, raw[:, 3:]], axis=1)
        keep = np.abs(raw[:, 2]) >= POS_Z_EPS  # [V, H, W]
        masks["lin_self_raw"] = np.broadcast_to(keep[:, None], raw.shape)
        masks["pts3d_in_self_view"] = np.broadcast_to(keep[..., None], keep.shape + (3,))
        notes.append(
            f"linear head: {int((~keep).sum())} pixel(s) with |raw z| < {POS_Z_EPS:g} masked in "
            "lin_self_raw / pts3d_in_self_view / post_pts3d_world (float32 noise can flip sign(z))"
        )

    reset = np.asarray(inputs["reset"])
    post = runtime.postprocess(ours["camera_pose"], ours["pts3d_in_self_view"], reset, chain=human3r_loop)
    for k, v in post.items():
        ours[f"post_{k}"] = v
    ours["post_conf"] = ours["conf_self"][post["view_index"]]
    ours["post_colors"] = inputs["img"].transpose(0, 2, 3, 1)[post["view_index"]] * 0.5 + 0.5
    if "pts3d_in_self_view" in masks:
        masks["post_pts3d_world"] = masks["pts3d_in_self_view"][post["view_index"]]

    refs = {**inter, **outputs}
    if human:
        notes += _human_rows(ours, out, refs, post, inputs["img"].shape[2:], smplx_path)

    # A random model's focal estimate can sit at its clip (0): measure it against the 60° focal base.
    h, w = inputs["img"].shape[2:]
    floors = {"post_focal": max(h, w) / (2 * np.tan(np.deg2rad(30)))}
    notes.append(f"post_focal relative to max(‖ref‖, {floors['post_focal']:.1f} px·√n) (the 60° focal base)")

    rows, skipped = [], []
    for name in sorted(refs, key=lambda n: (_stage_rank(n), n)):
        if name not in ours:
            skipped.append(name)
            continue
        try:
            rel, mx = rel_error(ours[name], refs[name], masks.get(name), floors.get(name, 0.0))
        except FixtureError as e:
            raise FixtureError(f"{path}: {name}: {e}") from None
        rows.append(Row(name, rel, mx, (tols or {}).get(name, tol), "masked" if name in masks else ""))
    return Report(str(path), rows, skipped, notes)
