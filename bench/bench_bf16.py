"""What the bfloat16 compute path costs in accuracy: the error of each output against float32.

    python bench/bench_bf16.py                              # the three shared fixtures (~3 min, 2 cores)
    python bench/bench_bf16.py --full human3r_672S          # also random full-size weights at 512x288 (minutes)
    python bench/bench_bf16.py --fixtures cut3r_tiny --smplx DIR --json bench/results/bf16.json

Each fixture of ../shared/fixtures (made by the official PyTorch code) is converted with our converter,
and its own views run through our online loop with the fixture's flags (resets, TTT3R, Human3R's
restart from the pose token), as `human3r-jax parity` does: once computing in float32, once in bfloat16
(parameters stay float32; `checkpoint.abstract_model(cfg, dtype=jnp.bfloat16)`, what `checkpoint.load`
builds). Every output of the bf16 run is compared with our float32 run; our float32 run is also compared
with the official outputs, the parity noise floor. Points: relative L2 error and median / p99 point error
as a fraction of the scene's median depth; confidences: relative L2 and median relative error; cameras:
translation error over the trajectory's extent and rotation error (max over frames); people (matched by
head location; counts per frame reported): joint rotations (geodesic degrees), betas and expression
(absolute), head translation and SMPL-X vertices posed with the synthetic model the fixture used (mm,
taking the units as metres; the fixtures' scenes are ~0.1-0.2 deep, so the head translation is also
given over the median depth), detection scores and the mask.

`--full PRESET` adds the same comparison with random full-size weights on a few synthetic frames (a
smooth random texture panning sideways); with random weights the detector is random too, so only the
scene outputs are compared there. Prints a markdown table (rows: outputs; columns: fixture or model;
each cell "bf16 vs our float32 (our float32 vs official)") and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from options import json_path

from human3r_jax import checkpoint as ckpt
from human3r_jax import parity, runtime
from human3r_jax.config import Human3rConfig
from human3r_jax.config import preset as model_preset
from human3r_jax.converters.convert import convert_file
from human3r_jax.errors import Human3rError
from human3r_jax.models import state_update
from human3r_jax.models.cut3r import Frame, StepOptions

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
FIXTURE_NAMES = ("cut3r_tiny", "cut3r_linear_tiny", "human3r_tiny")
DEFAULT_SMPLX = Path("/tmp/bench_smplx/smplx/SMPLX_NEUTRAL.npz")
MAKE_SMPLX = "python ../shared/tools/make_fake_smplx.py --root /tmp/bench_smplx --seed 0"
# (what, key, label): the rows of the table, in this order; a metric missing for a column prints "—".
ROWS = [
    ("pts3d_in_self_view", "rel_l2", "self-view points: rel L2"),
    ("pts3d_in_self_view", "median", "self-view points: median error / median depth"),
    ("pts3d_in_self_view", "p99", "self-view points: p99 error / median depth"),
    ("pts3d_in_self_view", "sign_flips", "self-view points: pixels whose raw z flipped sign (linear head)"),
    ("pts3d_in_self_view", "rel_l2_same_side", "self-view points: rel L2 without those pixels"),
    ("pts3d_world", "rel_l2", "world points: rel L2"),
    ("pts3d_world", "median", "world points: median error / median depth"),
    ("pts3d_world", "p99", "world points: p99 error / median depth"),
    ("pts3d_in_other_view", "rel_l2", "cross-view points: rel L2"),
    ("pts3d_in_other_view", "p99", "cross-view points: p99 error / median depth"),
    ("conf_self", "rel_l2", "self confidence: rel L2"),
    ("conf_self", "median_rel", "self confidence: median relative error"),
    ("conf", "rel_l2", "cross confidence: rel L2"),
    ("conf", "median_rel", "cross confidence: median relative error"),
    ("rgb", "rel_l2", "rgb: rel L2"),
    ("camera", "translation", "camera translation: max error / trajectory extent"),
    ("camera", "rotation_deg", "camera rotation: max error (deg)"),
    ("humans", "counts", "humans per frame (ref; other where different)"),
    ("humans", "matched", "people compared (matched by head location)"),
    ("humans", "rotation_max_deg", "SMPL-X joint rotations: max error (deg)"),
    ("humans", "rotation_mean_deg", "SMPL-X joint rotations: mean error (deg)"),
    ("humans", "betas_max", "betas: max abs error"),
    ("humans", "expression_max", "expression: max abs error"),
    ("humans", "transl_max_mm", "head translation: max error (mm)"),
    ("humans", "transl_max_depth", "head translation: max error / median depth"),
    ("humans", "verts_local_mean_mm", "vertices around the head: mean error (mm)"),
    ("humans", "verts_local_max_mm", "vertices around the head: max error (mm)"),
    ("humans", "verts_cam_mean_mm", "vertices (camera frame): mean error (mm)"),
    ("humans", "verts_cam_max_mm", "vertices (camera frame): max error (mm)"),
    ("humans", "verts_world_max_mm", "vertices (world frame): max error (mm)"),
    ("smpl_scores", "max_abs", "detection scores: max abs error"),
    ("msk", "max_abs", "human mask probability: max abs error"),
]
VIEW_KEYS = ("pts3d_in_self_view", "pts3d_in_other_view", "conf_self", "conf", "rgb", "smpl_scores", "msk")
HUMAN_KEYS = ("smpl_loc", "smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl")


# ---------------------------------------------------------------- metrics (float64 NumPy)


def _f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def rel_l2(a, ref) -> float:
    """‖a − ref‖ / ‖ref‖."""
    a, ref = _f64(a), _f64(ref)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def point_errors(a, ref, depth: float, mask=None) -> dict:
    """Points [..., 3]: relative L2, and median / p99 of the per-point distance over `depth`.
    `mask` [...] keeps only some points."""
    a, ref = _f64(a), _f64(ref)
    if mask is not None:
        a, ref = a[mask], ref[mask]
    dist = np.linalg.norm(a - ref, axis=-1).ravel()
    return {
        "rel_l2": rel_l2(a, ref),
        "median": float(np.median(dist) / depth),
        "p99": float(np.percentile(dist, 99) / depth),
    }


def conf_errors(a, ref) -> dict:
    """Confidences (≥ 1): relative L2 and the median of |a − ref| / ref."""
    a, ref = _f64(a), _f64(ref)
    return {"rel_l2": rel_l2(a, ref), "median_rel": float(np.median(np.abs(a - ref) / np.abs(ref)))}


def geodesic_deg(ra, rb) -> np.ndarray:
    """Angle (degrees) of ra·rbᵀ for rotations [..., 3, 3]; from ‖ra − rb‖_F = 2√2·sin(θ/2), exact
    near 0 where arccos of the trace is not."""
    fro = np.linalg.norm(_f64(ra) - _f64(rb), axis=(-2, -1))
    return np.degrees(2 * np.arcsin(np.clip(fro / (2 * np.sqrt(2)), 0, 1)))


def camera_errors(c2w, ref) -> dict:
    """Camera-to-world [F, 4, 4]: max translation error over the reference trajectory's extent (its
    largest distance between two camera centres) and max rotation error in degrees."""
    t, t_ref = _f64(c2w)[:, :3, 3], _f64(ref)[:, :3, 3]
    extent = float(np.linalg.norm(t_ref[:, None] - t_ref[None], axis=-1).max())
    return {
        "translation": float(np.linalg.norm(t - t_ref, axis=-1).max() / extent),
        "rotation_deg": float(geodesic_deg(c2w[:, :3, :3], ref[:, :3, :3]).max()),
        "extent": extent,
    }


def match_people(a: dict, ref: dict, radius: float) -> list[tuple[int, int, int]]:
    """Pairs (frame, slot in a, slot in ref) of valid people whose head locations (pixels) are each
    other's nearest and closer than `radius`."""
    pairs = []
    for f in range(len(ref["valid"])):
        ia, ir = np.nonzero(a["valid"][f])[0], np.nonzero(ref["valid"][f])[0]
        if not len(ia) or not len(ir):
            continue
        d = np.linalg.norm(_f64(a["smpl_loc"][f][ia])[:, None] - _f64(ref["smpl_loc"][f][ir])[None], axis=-1)
        for i, r in enumerate(d.argmin(1)):
            if d[:, r].argmin() == i and d[i, r] < radius:
                pairs.append((f, int(ia[i]), int(ir[r])))
    return pairs


def human_errors(a: dict, ref: dict, radius: float, depth: float) -> dict:
    """SMPL-X outputs of the matched people (slot arrays [F, S, …]); counts per frame of both.
    Lengths in mm (the units taken as metres) and the head translation also over the scene's `depth`."""
    counts, counts_ref = a["valid"].sum(1).tolist(), ref["valid"].sum(1).tolist()
    res = {"counts": counts_ref if counts == counts_ref else f"{counts_ref}; other {counts}"}
    pairs = match_people(a, ref, radius)
    res["matched"] = len(pairs)
    if not pairs:
        return res
    f, sa, sr = (np.asarray(x) for x in zip(*pairs))
    diff = lambda k: _f64(a[k][f, sa]) - _f64(ref[k][f, sr])  # [P, …]
    rot = geodesic_deg(a["smpl_rotmat"][f, sa], ref["smpl_rotmat"][f, sr])  # [P, 53]
    res |= {
        "rotation_max_deg": float(rot.max()),
        "rotation_mean_deg": float(rot.mean()),
        "betas_max": float(np.abs(diff("smpl_shape")).max()),
        "expression_max": float(np.abs(diff("smpl_expression")).max()),
        "transl_max_mm": 1e3 * float(np.linalg.norm(diff("smpl_transl"), axis=-1).max()),
    }
    res["transl_max_depth"] = res["transl_max_mm"] / 1e3 / depth
    if "verts_cam" in a and "verts_cam" in ref:
        # the body around its head (pose and shape alone), in the camera and in the world
        diffs = {"local": diff("verts_cam") - diff("smpl_transl")[:, None], "cam": diff("verts_cam")}
        diffs["world"] = diff("verts_world")
        for name, d in diffs.items():
            dist = 1e3 * np.linalg.norm(d, axis=-1)
            res |= {f"verts_{name}_mean_mm": float(dist.mean()), f"verts_{name}_max_mm": float(dist.max())}
    return res


def compare(a: dict, ref: dict, radius: float | None, keep=None) -> dict:
    """Every output of run `a` against run `ref` (dicts from `run_model` / `official_outputs`).
    `keep` [V, H, W]: self-view pixels to compare (None: all)."""
    depth = float(np.median(_f64(ref["pts3d_in_self_view"])[..., 2]))
    keep_world = None if keep is None else keep[ref["view_index"]]
    res = {
        "pts3d_in_self_view": point_errors(a["pts3d_in_self_view"], ref["pts3d_in_self_view"], depth, keep),
        "pts3d_world": point_errors(a["pts3d_world"], ref["pts3d_world"], depth, keep_world),
        "conf_self": conf_errors(a["conf_self"], ref["conf_self"]),
        "camera": camera_errors(a["c2w"], ref["c2w"]),
        "median_depth": depth,
    }
    if "pts3d_in_other_view" in a:  # the cross-view and rgb heads (off with all_heads=False)
        res["pts3d_in_other_view"] = point_errors(a["pts3d_in_other_view"], ref["pts3d_in_other_view"], depth)
        res["conf"] = conf_errors(a["conf"], ref["conf"])
        res["rgb"] = {"rel_l2": rel_l2(a["rgb"], ref["rgb"])}
    if "lin_z" in a and "lin_z" in ref:  # linear head: a point whose raw z flips sign jumps to the mirror side
        same = np.sign(a["lin_z"]) == np.sign(ref["lin_z"])
        res["pts3d_in_self_view"]["sign_flips"] = int((~same).sum())
        same_side = point_errors(a["pts3d_in_self_view"], ref["pts3d_in_self_view"], depth, same)
        res["pts3d_in_self_view"]["rel_l2_same_side"] = same_side["rel_l2"]
    for k in ("smpl_scores", "msk"):
        if k in a and k in ref:
            res[k] = {"max_abs": float(np.abs(_f64(a[k]) - _f64(ref[k])).max())}
    if radius is not None and "humans" in a and "humans" in ref:
        res["humans"] = human_errors(a["humans"], ref["humans"], radius, depth)
    return res


# ---------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Setup:
    """How to run one model over its views."""

    cfg: object  # Cut3rConfig | Human3rConfig
    params: dict  # float32 nested dict
    frames: Frame  # img [V, 1, H, W, 3], flags [V, 1]
    opts: StepOptions
    chain: bool  # Human3R's post-processing: drop reset duplicates, chain segments


def run_model(setup: Setup, dtype, smplx=None) -> dict:
    """Run the online loop computing in `dtype` → per-view outputs [V, …], per-frame cameras `c2w`
    [F, 4, 4] and world points `pts3d_world` [F, H, W, 3], `view_index` [F], and for Human3R the
    people of each frame's slots (`humans`: valid [F, S], smpl_* [F, S, …], verts_* [F, S, 10475, 3]
    with an SMPL-X model)."""
    graphdef, params = ckpt.params_into(ckpt.abstract_model(setup.cfg, dtype), setup.params)
    carry = runtime.init_carry(graphdef, params, 1)
    _, out = runtime.run_sequence(graphdef, params, carry, setup.frames, setup.opts)
    out = jax.tree.map(lambda x: np.asarray(x)[:, 0], out)  # drop the batch axis
    reset = np.asarray(setup.frames.reset)[:, 0]
    post = runtime.postprocess(out["camera_pose"], out["pts3d_in_self_view"], reset, chain=setup.chain)
    res = {k: out[k] for k in VIEW_KEYS if k in out}
    res |= {"c2w": post["c2w"], "pts3d_world": post["pts3d_world"], "view_index": post["view_index"]}
    if "taps" in out:  # linear head: the sign of the raw z decides each point's side
        res["lin_z"] = out["taps"]["lin_self_raw"][..., 2]
    if "smpl_valid" in out:
        vi = post["view_index"]
        humans = {"valid": out["smpl_valid"][vi], **{k: out[k][vi] for k in HUMAN_KEYS}}
        if smplx is not None:
            hw = out["pts3d_in_self_view"].shape[1:3]
            bodies = runtime.postprocess_humans(out, vi, post["c2w"], hw, smplx)
            humans |= {"verts_cam": bodies["smpl_verts_cam"], "verts_world": bodies["smpl_verts_world"]}
        res["humans"] = humans
    return res


def official_outputs(outputs: dict) -> dict:
    """A fixture's outputs.npz in `run_model`'s layout (the people's zero-padded axis as slots)."""
    vi = outputs["post_view_index"]
    res = {k: outputs[k] for k in VIEW_KEYS if k in outputs}
    res |= {"c2w": outputs["post_c2w"], "pts3d_world": outputs["post_pts3d_world"], "view_index": vi}
    if "n_humans" in outputs:
        nmax = outputs["smpl_loc"].shape[1]
        humans = {"valid": np.arange(nmax)[None] < outputs["n_humans"][vi][:, None]}
        humans |= {k: outputs[k][vi] for k in HUMAN_KEYS}
        humans |= {"verts_cam": outputs["post_smpl_verts_cam"], "verts_world": outputs["post_smpl_verts_world"]}
        res["humans"] = humans
    return res


def fixture_setup(fx: dict, all_heads: bool = True) -> Setup:
    """The fixture's converted weights, views and loop flags; all_heads=False: only the self-view
    points, confidence and pose (and people), which compiles faster."""
    fcfg = fx["config"]
    cfg, params, _ = convert_file(fx["path"] / "checkpoint.pth", parity._dino_override(fcfg))
    human = isinstance(cfg, Human3rConfig)
    # Human3R's loop (`inference_recurrent_lighter`) restarts from the pose token after a reset and its demo
    # chains the segments; CUT3R's `forward_recurrent` does neither.
    lighter = human or "lighter" in str(fcfg.get("official", {}).get("loop", ""))
    ttt3r = fcfg.get("input", {}).get("use_ttt3r", False)
    linear = (cfg.cut3r if human else cfg).head_type == "linear"
    opts = StepOptions(
        rgb=all_heads,
        cross=all_heads,
        state_update=state_update.ttt3r if ttt3r else state_update.cut3r,
        pose_token_after_reset=lighter,
        taps=linear,
    )
    return Setup(cfg, params, parity._views(fx["inputs"]), opts, chain=lighter)


def match_radius(cfg) -> float | None:
    """People are the same if their heads are within one DINOv2 patch (pixels of the square human image)."""
    return float(cfg.dino.patch_size) if isinstance(cfg, Human3rConfig) else None


def compare_fixture(path: str | Path, smplx=None, all_heads: bool = True) -> dict:
    """bf16 vs our float32, and our float32 vs the official outputs (the noise floor), on one fixture."""
    t0 = time.perf_counter()
    fx = parity.load_fixture(path)
    setup = fixture_setup(fx, all_heads)
    f32 = run_model(setup, None, smplx)
    bf16 = run_model(setup, jnp.bfloat16, smplx)
    radius = match_radius(setup.cfg)
    # Parity's rule: pixels whose raw z is within float32 noise of 0 may sit on either side.
    keep = np.abs(f32["lin_z"]) >= parity.POS_Z_EPS if "lin_z" in f32 else None
    return {
        "bf16_vs_f32": compare(bf16, f32, radius),
        "f32_vs_official": compare(f32, official_outputs(fx["outputs"]), radius, keep),
        "masked_pixels_in_floor": 0 if keep is None else int((~keep).sum()),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def panning_frames(n: int, h: int, w: int, seed: int) -> Frame:
    """n frames [n, 1, h, w, 3] in [-1, 1] of a smooth random texture panning 16 px per frame."""
    rng = np.random.default_rng(seed)
    width = w + 16 * (n - 1)
    coarse = jnp.asarray(rng.uniform(-1, 1, (h // 16 + 1, width // 16 + 1, 3)), jnp.float32)
    canvas = jnp.clip(jax.image.resize(coarse, (h, width, 3), "cubic"), -1, 1)
    img = jnp.stack([canvas[:, 16 * i : 16 * i + w] for i in range(n)])[:, None]
    return Frame(img, jnp.ones((n, 1), bool), jnp.zeros((n, 1), bool))


def compare_full(preset: str, size: tuple[int, int], n_frames: int, seed: int = 0) -> dict:
    """bf16 vs float32 with random full-size weights (scene outputs only: the detector is random)."""
    t0 = time.perf_counter()
    cfg = model_preset(preset)
    w, h = size
    params = ckpt.random_params(ckpt.abstract_model(cfg), seed, as_jax=True)
    setup = Setup(cfg, params, panning_frames(n_frames, h, w, seed), StepOptions(rgb=True, cross=True), chain=False)
    f32 = run_model(setup, None)
    bf16 = run_model(setup, jnp.bfloat16)
    # a random detector's scores and masks say nothing about bf16: the scene outputs only
    res = {k: v for k, v in compare(bf16, f32, radius=None).items() if k not in ("smpl_scores", "msk")}
    if "humans" in f32:
        res["humans"] = {"counts": human_errors(bf16["humans"], f32["humans"], match_radius(cfg), 1.0)["counts"]}
    return {"bf16_vs_f32": res, "size": f"{w}x{h}", "frames": n_frames, "seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------- report


def _cell(metrics: dict | None, what: str, key: str) -> str:
    value = (metrics or {}).get(what, {}).get(key)
    if value is None:
        return "—"
    if isinstance(value, (int, str, list)):
        return str(value)
    return f"{value:.1e}"


def table(results: dict) -> str:
    """Markdown: one row per output, one column per fixture/model; cell = bf16 (floor)."""
    names = list(results)
    lines = ["| output | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for what, key, label in ROWS:
        cells = []
        for n in names:
            bf16 = _cell(results[n]["bf16_vs_f32"], what, key)
            floor = _cell(results[n].get("f32_vs_official"), what, key)
            cells.append(bf16 if floor == "—" else f"{bf16} ({floor})")
        if any(c != "—" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from None
    if w % 16 or h % 16 or w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 16, got {text!r}")
    return w, h


def _preset(name: str) -> str:
    try:
        model_preset(name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None
    return name


def _load_smplx(path: Path | None):
    """The synthetic SMPL-X model (None: the default file if it exists)."""
    from human3r_jax.models.smplx import load_smplx

    if path is None:
        if not DEFAULT_SMPLX.is_file():
            print(f"no {DEFAULT_SMPLX}: vertices not compared (make it with `{MAKE_SMPLX}`)", file=sys.stderr)
            return None
        path = DEFAULT_SMPLX
    return load_smplx(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", nargs="*", default=list(FIXTURE_NAMES), help="names in ../shared/fixtures or folders")
    p.add_argument("--smplx", type=Path, help=f"SMPL-X model the fixture used (default {DEFAULT_SMPLX})")
    p.add_argument("--full", type=_preset, metavar="PRESET", help="also random weights of this preset (human3r_672S)")
    p.add_argument("--size", type=_size, default=(512, 288), help="WxH for --full (default 512x288)")
    p.add_argument("--frames", type=int, choices=range(2, 9), default=3, metavar="2..8", help="frames for --full")
    p.add_argument("--json", type=json_path, default=REPO / "bench" / "results" / "bf16.json")
    args = p.parse_args(argv)

    results = {}
    try:
        smplx = _load_smplx(args.smplx)
        for name in args.fixtures:
            path = FIXTURES / name if (FIXTURES / name).is_dir() else Path(name)
            results[Path(name).name] = compare_fixture(path, smplx)
            print(f"{name}: {results[Path(name).name]['seconds']} s", file=sys.stderr)
        if args.full:
            results[f"{args.full} (random)"] = compare_full(args.full, args.size, args.frames)
    except Human3rError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("Each cell: bf16 vs our float32 (our float32 vs the official outputs: the parity noise floor).")
    if args.full:
        w, h = args.size
        print(f"{args.full}: random weights at {w}x{h}, {args.frames} frames; scene outputs only (random detector).")
    print(table(results))
    machine = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
