"""Parity of our port against a fixture made by running the official PyTorch code.

A fixture folder holds `checkpoint.pth`, `config.json`, `inputs.npz`, `outputs.npz` and
`intermediates.npz` (format of `shared/fixtures`). The model config comes from the checkpoint
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
from human3r_jax.converters.convert import convert_file
from human3r_jax.models.cut3r import Frame, StepOptions

FILES = ("checkpoint.pth", "config.json", "inputs.npz", "outputs.npz", "intermediates.npz")
# Pixels whose raw z is this close to 0 may flip sign under float32 noise (linear head, pos_z).
POS_Z_EPS = 1e-5

STAGES = [
    "patch_embed", "patch_pos", r"enc_block\d+", "enc_out", "dec_embed_img", "state_init", "mem_init", "state_in",
    "mem_in", "state_pos", "pose_query", "dec_in_tokens", "dec_in_pos", r"dec_state_l\d+", r"dec_img_l\d+",
    "dec_img_final", "state_candidate", "mem_candidate", "pose_raw", "final_transform_out", r"dpt_\w+_raw",
    r"lin_\w+_tokens", r"lin_\w+_raw", "camera_pose", "pts3d_in_self_view", "conf_self", "rgb",
    "pts3d_in_other_view", "conf", "state_out", "mem_out", r"post_\w+",
]


class FixtureError(ValueError):
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
        lines = [f"parity: {self.fixture}", f"{'stage / output':28s} {'rel L2':>10s} {'max |diff|':>11s} {'tol':>8s}  ok"]
        for r in self.rows:
            lines.append(f"{r.name:28s} {r.rel:10.2e} {r.max_abs:11.2e} {r.tol:8.0e}  {'yes' if r.ok else 'NO'}"
                         + (f"  ({r.note})" if r.note else ""))
        if self.skipped:
            lines.append(f"not compared (not produced by this model): {', '.join(self.skipped)}")
        lines.extend(f"note: {n}" for n in self.notes)
        worst = max(self.rows, key=lambda r: r.rel / r.tol)
        first = self.first_failure()
        lines.append(f"{len(self.rows)} compared, worst {worst.name} {worst.rel:.2e}; "
                     + ("PASS" if self.ok else f"FAIL (first departure: {first.name})"))
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
    except json.JSONDecodeError as e:
        raise FixtureError(f"{path / 'config.json'}: invalid JSON ({e})") from None
    arrays = {}
    for name in ("inputs", "outputs", "intermediates"):
        try:
            with np.load(path / f"{name}.npz", allow_pickle=False) as z:
                arrays[name] = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise FixtureError(f"{path / (name + '.npz')}: cannot read ({e})") from None
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


def run_fixture(path: str | Path, tol: float = 1e-4, tols: dict[str, float] | None = None) -> Report:
    fx = load_fixture(path)
    fcfg, inputs, outputs, inter = fx["config"], fx["inputs"], fx["outputs"], fx["intermediates"]
    kind = fcfg.get("kind", "cut3r")
    if kind != "cut3r":
        raise FixtureError(f"{path}: fixtures of kind {kind!r} are not supported yet")
    run = fcfg.get("input", {})
    cfg, params, _ = convert_file(fx["path"] / "checkpoint.pth")
    graphdef, state = ckpt.params_into(ckpt.abstract_model(cfg), params)
    # CUT3R's own loop reads the pose memory right after a reset; Human3R's uses the pose token.
    opts = StepOptions(rgb=True, cross=True, ttt3r=bool(run.get("use_ttt3r", False)),
                       pose_token_after_reset=(kind != "cut3r"), taps=True)
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
        if re.fullmatch(r"(dpt|lin)_\w+_raw", k):
            ours[k] = ours[k].transpose(0, 3, 1, 2)  # NHWC → the fixture's NCHW

    notes, masks = [], {}
    if cfg.head_type == "linear":
        # The official pos_z multiplies xyz by sign(z) in place, so the hooked raw map carries it.
        raw = ours["lin_self_raw"]
        sign = np.sign(raw[:, 2:3])
        ours["lin_self_raw"] = np.concatenate([raw[:, :3] * sign, raw[:, 3:]], axis=1)
        keep = np.abs(raw[:, 2]) >= POS_Z_EPS  # [V, H, W]
        masks["lin_self_raw"] = np.broadcast_to(keep[:, None], raw.shape)
        masks["pts3d_in_self_view"] = np.broadcast_to(keep[..., None], keep.shape + (3,))
        notes.append(f"linear head: {int((~keep).sum())} pixel(s) with |raw z| < {POS_Z_EPS:g} masked in "
                     "lin_self_raw / pts3d_in_self_view / post_pts3d_world (float32 noise can flip sign(z))")

    post = runtime.postprocess(ours["camera_pose"], ours["pts3d_in_self_view"], np.asarray(inputs["reset"]),
                               chain=(kind != "cut3r"))
    for k, v in post.items():
        ours[f"post_{k}"] = v
    ours["post_conf"] = ours["conf_self"][post["view_index"]]
    ours["post_colors"] = inputs["img"].transpose(0, 2, 3, 1)[post["view_index"]] * 0.5 + 0.5
    if "pts3d_in_self_view" in masks:
        masks["post_pts3d_world"] = masks["pts3d_in_self_view"][post["view_index"]]

    # A random model's focal estimate can sit at its clip (0): measure it against the 60° focal base.
    h, w = inputs["img"].shape[2:]
    floors = {"post_focal": max(h, w) / (2 * np.tan(np.deg2rad(30)))}
    notes.append(f"post_focal relative to max(‖ref‖, {floors['post_focal']:.1f} px·√n) (the 60° focal base)")

    refs = {**inter, **outputs}
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
