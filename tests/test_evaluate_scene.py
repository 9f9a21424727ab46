"""`human3r-jax evaluate depth|pose` end to end on tiny synthetic datasets in the official layouts (random
tiny CUT3R, 224 rule so that compilation stays short): metrics.json, caching and resuming, --rescore, and
one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from human3r_jax import cli, outputs, runtime
from human3r_jax.data.images import preprocess
from human3r_jax.evaluation import depth as depth_metrics
from human3r_jax.evaluation import frames, runner, scene
from human3r_jax.evaluation.depth_data import BONN_SEQUENCES, SINTEL_POSE_SEQUENCES
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.reconstruct import load_model

MODEL = ["--random-weights", "cut3r_tiny", "--size", "224", "--quiet"]


def _rgb(rng, w=64, h=48):
    return PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def make_bonn(root: Path, n_frames: int = 3, n: int = 110) -> Path:
    rng = np.random.default_rng(0)
    for seq in BONN_SEQUENCES:
        d = root / f"rgbd_bonn_{seq}"
        (d / f"rgb_{n}").mkdir(parents=True)
        (d / f"depth_{n}").mkdir()
        for i in range(n_frames):
            _rgb(rng).save(d / f"rgb_{n}" / f"{i:05d}.png")
            depth = rng.integers(5000, 20000, (48, 64)).astype(np.uint16)
            depth[:4] = 0  # invalid rows
            PIL.Image.fromarray(depth).save(d / f"depth_{n}" / f"{i:05d}.png")
        (d / f"rgb_{n}" / "notes.txt").write_text("not a frame")  # skipped like the official loader does
    return root


def make_tum(
    root: Path, seqs=("rgbd_dataset_freiburg3_sitting_static", "rgbd_dataset_freiburg3_walking_xyz"), n_frames: int = 4
) -> Path:
    rng = np.random.default_rng(1)
    for k, seq in enumerate(seqs):
        d = root / seq
        (d / "rgb_90").mkdir(parents=True)
        lines = ["# timestamp tx ty tz qx qy qz qw"]
        for i in range(n_frames):
            t = 1000.0 + 0.1 * i
            _rgb(rng).save(d / "rgb_90" / f"{t:.6f}.png")
            p = [0.3 * i, 0.1 * i * i, 0.05 * (i % 2) + 0.02 * k]
            q = [0.0, np.sin(0.05 * i), 0.0, np.cos(0.05 * i)]
            lines.append(" ".join(f"{v:.6f}" for v in [t, *p, *q]))
        (d / "groundtruth_90.txt").write_text("\n".join(lines) + "\n")
    return root


def _c2w(i: int, k: int = 0) -> np.ndarray:
    """A camera-to-world pose of a curved (non-collinear) path: frame i of sequence k."""
    a = 0.05 * i + 0.01 * k
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    m[:3, 3] = [0.3 * i, 0.1 * i * i, 0.05 * (i % 2) + 0.02 * k]
    return m


KITTI = Path("depth_selection") / "val_selection_cropped"


def make_kitti(
    root: Path, drives=("2011_09_26_drive_0002_sync", "2011_09_26_drive_0005_sync"), n_frames: int = 2
) -> Path:
    """KITTI as MonST3R's prepare_kitti.py gathers it: sparse uint16 GT, metres × 256, 0 = no LiDAR point."""
    rng = np.random.default_rng(2)
    for drive in drives:
        img, gt = root / KITTI / "image_gathered" / drive, root / KITTI / "groundtruth_depth_gathered" / drive
        img.mkdir(parents=True)
        gt.mkdir(parents=True)
        for i in range(n_frames):
            name = f"{drive}_image_{i:010d}_image_02.png"
            _rgb(rng, 80, 24).save(img / name)
            depth = (rng.uniform(3.0, 60.0, (24, 80)) * 256).astype(np.uint16)
            depth[:, ::2] = 0  # sparse: half the pixels have no GT
            PIL.Image.fromarray(depth).save(gt / name)
    return root


def write_dpt(path: Path, depth: np.ndarray) -> None:
    h, w = depth.shape
    path.write_bytes(
        np.float32(202021.25).tobytes() + np.array([w, h], "<i4").tobytes() + depth.astype("<f4").tobytes()
    )


def write_cam(path: Path, c2w: np.ndarray) -> None:
    k = np.array([[50.0, 0, 32], [0, 50.0, 14], [0, 0, 1]])
    w2c = np.linalg.inv(c2w)[:3]
    path.write_bytes(np.float32(202021.25).tobytes() + k.astype("<f8").tobytes() + w2c.astype("<f8").tobytes())


def make_sintel(root: Path, seqs=("alley_1", "bamboo_2", "market_2"), n_frames: int = 2, cams: bool = False) -> Path:
    """MPI-Sintel training/: final/ frames, depth/ .dpt GT (some pixels 0 or beyond the 70 m cap), and with
    `cams` camdata_left/ .cam poses."""
    rng = np.random.default_rng(4)
    for k, seq in enumerate(seqs):
        fin, dep = root / "training" / "final" / seq, root / "training" / "depth" / seq
        fin.mkdir(parents=True)
        dep.mkdir(parents=True)
        if cams:
            (root / "training" / "camdata_left" / seq).mkdir(parents=True)
        for i in range(n_frames):
            _rgb(rng, 64, 28).save(fin / f"frame_{i + 1:04d}.png")
            depth = rng.uniform(1.0, 30.0, (28, 64)).astype(np.float32)
            depth[0] = 0.0  # invalid
            depth[1] = 100.0  # beyond Sintel's 70 m cap
            write_dpt(dep / f"frame_{i + 1:04d}.dpt", depth)
            if cams:
                write_cam(root / "training" / "camdata_left" / seq / f"frame_{i + 1:04d}.cam", _c2w(i, k))
    return root


def make_scannet(root: Path, scenes=("scene0707_00", "scene0708_00"), n_frames: int = 3) -> Path:
    """ScanNet as the official preparation leaves it: color_90/*.jpg and pose_90.txt (flattened c2w per line)."""
    rng = np.random.default_rng(5)
    for k, scene_ in enumerate(scenes):
        d = root / scene_
        (d / "color_90").mkdir(parents=True)
        lines = []
        for i in range(n_frames):
            _rgb(rng, 64, 48).save(d / "color_90" / f"{i * 10}.jpg")
            lines.append(" ".join(f"{v:.8f}" for v in _c2w(i, k).ravel()))
        (d / "pose_90.txt").write_text("\n".join(lines) + "\n")
    return root


def run_cli(argv, capsys):
    code = cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, [line for line in cap.err.splitlines() if line.strip() and "RANDOM WEIGHTS" not in line]


# ---------------------------------------------------------------- frame loader


@pytest.mark.parametrize(
    "raw,expected",
    [
        ((640, 480), (512, 384)),
        ((1024, 436), (512, 208)),
        ((1242, 375), (512, 144)),
        ((1296, 968), (512, 368)),
        ((1080, 1920), (288, 512)),
        ((4112, 3008), (512, 368)),
    ],
)
def test_eval_sizes_match_the_spec_table(raw, expected):
    assert frames.eval_model_size(*raw) == expected
    img = PIL.Image.new("RGB", raw, (10, 200, 30))
    for crop in (True, False):
        assert frames.eval_preprocess(img, 512, crop).shape == (expected[1], expected[0], 3)


def test_crop_mode_is_the_demo_loader_and_resize_squeezes():
    rng = np.random.default_rng(3)
    for size, raw in ((512, (1024, 436)), (512, (640, 480)), (224, (640, 480)), (512, (300, 300))):
        img = _rgb(rng, *raw)
        a = frames.eval_preprocess(img, size, crop=True)
        assert a.dtype == np.float32 and np.array_equal(a, preprocess(img, size))
    img = _rgb(rng, 1024, 436)
    squeezed = frames.eval_preprocess(img, 512, crop=False)
    assert squeezed.shape == (208, 512, 3) and not np.array_equal(squeezed, preprocess(img, 512))
    assert squeezed.min() >= -1 and squeezed.max() <= 1
    # no crop needed (640x480 → 512x384): resize and crop modes coincide
    img = _rgb(rng, 640, 480)
    assert np.array_equal(frames.eval_preprocess(img, 512, crop=False), preprocess(img, 512))


# ---------------------------------------------------------------- depth (Bonn)


def test_depth_bonn_metrics_and_a_rerun_skips_every_sequence(tmp_path, capsys, monkeypatch):
    root, out = make_bonn(tmp_path / "bonn"), tmp_path / "out"
    code, stdout, err = run_cli(
        ["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out), *MODEL], capsys
    )
    assert code == 0, err
    doc = json.loads((out / "metrics.json").read_text())
    entry = doc["results"]["depth/bonn"]
    assert list(entry["align"]) == ["scale"]  # CUT3R's official set
    assert set(entry["align"]["scale"]["sequences"]) == set(BONN_SEQUENCES)
    for key in ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1.25", "delta_1.25^2", "delta_1.25^3"):
        assert entry["metrics"][key]["unit"] and entry["metrics"][key]["name"]
        assert np.isfinite(entry["align"]["scale"]["mean"][key])
    assert entry["metrics"]["rmse"]["unit"] == "m"
    assert entry["align"]["scale"]["sequences"]["crowd2"]["valid_pixels"] == 3 * 44 * 64
    assert entry["settings"]["crop"] is False and entry["settings"]["reset_interval"] is None
    assert entry["settings"]["model"]["random_weights"] == "cut3r_tiny"
    assert "| **weighted mean** |" in stdout and "Abs Rel" in stdout
    with np.load(out / "bonn" / "balloon2.npz") as z:
        assert z["depth"].shape == (3, 224, 224) and z["c2w"].shape == (3, 4, 4) and z["focal"].shape == (3,)
        assert list(z["frame_name"]) == ["00000.png", "00001.png", "00002.png"]
    assert outputs.is_marked(out, "evaluation")

    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "bonn").glob("*.npz")}

    def no_model(*a, **k):
        raise AssertionError("the model ran again")

    monkeypatch.setattr(runtime, "step", no_model)
    monkeypatch.setattr("human3r_jax.reconstruct.load_model", no_model)
    code, _, err = run_cli(
        [
            "evaluate",
            "depth",
            "--dataset",
            "bonn",
            "--root",
            str(root),
            "--out",
            str(out),
            *MODEL,
            "--align",
            "scale",
            "--align",
            "metric",
        ],
        capsys,
    )
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "bonn").glob("*.npz")} == mtimes
    entry = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]
    assert list(entry["align"]) == ["scale", "metric"]


def test_interrupted_run_resumes_and_rescore_needs_no_model(tmp_path, capsys, monkeypatch):
    root, out = make_bonn(tmp_path / "bonn"), tmp_path / "out"

    def stop(name):
        raise KeyboardInterrupt("after " + name)

    with pytest.raises(KeyboardInterrupt):
        scene.evaluate(
            "depth",
            "bonn",
            root,
            out,
            random_weights="cut3r_tiny",
            size=224,
            progress=False,
            on_sequence=stop,
            print_table=False,
        )
    cached = sorted(p.name for p in (out / "bonn").glob("*.npz"))
    assert cached == ["balloon2.npz"] and not (out / "metrics.json").exists()
    first = (out / "bonn" / "balloon2.npz").stat().st_mtime_ns

    # --rescore before the cache is complete: one line naming the missing sequence
    code, _, err = run_cli(
        ["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out), "--rescore", "--quiet"],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "crowd2.npz" in err[0]

    seen = []
    scene.evaluate(
        "depth",
        "bonn",
        root,
        out,
        random_weights="cut3r_tiny",
        size=224,
        progress=False,
        on_sequence=seen.append,
        print_table=False,
    )
    assert seen == list(BONN_SEQUENCES[1:])
    assert (out / "bonn" / "balloon2.npz").stat().st_mtime_ns == first
    before = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("human3r_jax.reconstruct.load_model", no_model)
    monkeypatch.setattr(runtime, "step", no_model)
    code, stdout, err = run_cli(
        [
            "evaluate",
            "depth",
            "--dataset",
            "bonn",
            "--root",
            str(root),
            "--out",
            str(out),
            "--rescore",
            "--align",
            "scale",
            "--align",
            "metric",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    after = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]
    assert after["align"]["scale"] == before["align"]["scale"]
    assert "metric" in after["align"] and "align metric" in stdout
    # metric (no alignment) differs from the scale-aligned numbers
    assert after["align"]["metric"]["mean"]["abs_rel"] != after["align"]["scale"]["mean"]["abs_rel"]


# ---------------------------------------------------------------- pose (TUM)


def test_pose_tum_metrics_with_resets(tmp_path, capsys):
    root, out = make_tum(tmp_path / "tum"), tmp_path / "out"
    code, stdout, err = run_cli(
        [
            "evaluate",
            "pose",
            "--dataset",
            "tum",
            "--root",
            str(root),
            "--out",
            str(out),
            *MODEL,
            "--reset-interval",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    entry = json.loads((out / "metrics.json").read_text())["results"]["pose/tum"]
    assert entry["metrics"]["ate"]["unit"].startswith("m") and entry["metrics"]["rpe_rot"]["unit"].startswith("deg")
    assert entry["metrics"]["rpe_trans"]["unit"].startswith("m")
    assert set(entry["sequences"]) == {"rgbd_dataset_freiburg3_sitting_static", "rgbd_dataset_freiburg3_walking_xyz"}
    for r in entry["sequences"].values():
        assert set(r) >= {"ate", "rpe_trans", "rpe_rot", "num_poses", "failed"}
        assert r["failed"] or (r["num_poses"] == 4 and r["ate"] >= 0)
    assert set(entry["mean"]) >= {"ate", "rpe_trans", "rpe_rot", "num_sequences", "num_failed"}
    assert entry["settings"]["crop"] is True and entry["settings"]["reset_interval"] == 2
    assert "ATE (m)" in stdout and "RPE rot (deg)" in stdout
    seq = root / "rgbd_dataset_freiburg3_walking_xyz"
    with np.load(out / "tum" / f"{seq.name}.npz") as z:
        cache = dict(z)
    assert cache["c2w"].shape == (4, 4, 4)
    # the cache ≡ the parity-tested path: scan over the official view list (duplicate after each reset), the
    # demo's post-processing (drop the duplicates, chain the segments), on crop-mode eval frames
    model = load_model(random_weights="cut3r_tiny")
    imgs = np.stack([frames.load_eval_frame(f, 224, crop=True) for f in frames.frame_files(seq / "rgb_90")])
    idx, reset = runtime.reset_views(4, 2)
    views = Frame(jnp.asarray(imgs[idx][:, None]), jnp.ones((len(idx), 1), bool), jnp.asarray(reset[:, None]))
    carry = runtime.init_carry(model.graphdef, model.params, 1)
    _, o = runtime.run_sequence(model.graphdef, model.params, carry, views, StepOptions(rgb=False, cross=False))
    post = runtime.postprocess(np.asarray(o["camera_pose"][:, 0]), np.asarray(o["pts3d_in_self_view"][:, 0]), reset)
    assert reset.tolist() == [False, True, False, False, True, False]
    np.testing.assert_allclose(cache["c2w"], post["c2w"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cache["focal"], post["focal"], rtol=1e-4, atol=1e-4)
    depth = np.asarray(o["pts3d_in_self_view"][:, 0, ..., 2])[post["view_index"]]
    np.testing.assert_allclose(cache["depth"], depth, rtol=1e-4, atol=1e-5)

    # other settings into the same cache: refused, one line
    code, _, err = run_cli(
        ["evaluate", "pose", "--dataset", "tum", "--root", str(root), "--out", str(out), *MODEL], capsys
    )
    assert code == 2 and len(err) == 1 and "other settings" in err[0] and "reset_interval" in err[0]


# ---------------------------------------------------------------- depth (KITTI, Sintel)


def _finite_depth_block(block, seqs, valid_pixels):
    assert list(block["sequences"]) == list(seqs)
    for r in block["sequences"].values():
        assert r["valid_pixels"] == valid_pixels
        assert all(np.isfinite(r[k]) for k in (*depth_metrics.METRICS, "scale")), r
    assert all(np.isfinite(block["mean"][k]) for k in depth_metrics.METRICS), block["mean"]


def test_depth_kitti_and_sintel_into_one_output_folder(tmp_path, capsys):
    drives, seqs = ("2011_09_26_drive_0002_sync", "2011_09_26_drive_0005_sync"), ("alley_1", "bamboo_2", "market_2")
    kitti, sintel = make_kitti(tmp_path / "kitti", drives), make_sintel(tmp_path / "sintel", seqs)
    out = tmp_path / "out"
    for name, root in (("kitti", kitti), ("sintel", sintel)):
        code, stdout, err = run_cli(
            ["evaluate", "depth", "--dataset", name, "--root", str(root), "--out", str(out), *MODEL], capsys
        )
        assert code == 0, err
        assert f"### depth — {name} — align scale" in stdout and "| **weighted mean** |" in stdout
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert set(results) == {"depth/kitti", "depth/sintel"}
    # KITTI: every other column has GT, no depth cap; Sintel: row 0 is 0 and row 1 beyond the 70 m cap
    for name, names, frames_dir, valid in (
        ("kitti", drives, kitti / KITTI / "image_gathered", 2 * 24 * 40),
        ("sintel", seqs, sintel / "training" / "final", 2 * 26 * 64),
    ):
        entry = results[f"depth/{name}"]
        assert entry["dataset"] == name and entry["sequences_listed"] == list(names)
        assert set(entry["metrics"]) >= set(depth_metrics.METRICS)
        assert list(entry["align"]) == ["scale"]  # CUT3R's official set
        _finite_depth_block(entry["align"]["scale"], names, valid)
        assert entry["settings"]["crop"] is False and entry["settings"]["dataset"] == name
        with np.load(out / name / f"{names[-1]}.npz") as z:
            assert z["depth"].shape == (2, 224, 224) and z["c2w"].shape == (2, 4, 4)
            assert list(z["frame_name"]) == sorted(p.name for p in (frames_dir / names[-1]).iterdir())

    # every official alignment from the cache alone
    code, _, err = run_cli(
        [
            "evaluate",
            "depth",
            "--dataset",
            "sintel",
            "--root",
            str(sintel),
            "--out",
            str(out),
            "--rescore",
            "--quiet",
            "--align",
            "scale",
            "--align",
            "metric",
            "--align",
            "scale&shift",
        ],
        capsys,
    )
    assert code == 0, err
    entry = json.loads((out / "metrics.json").read_text())["results"]["depth/sintel"]
    assert list(entry["align"]) == ["scale", "metric", "scale&shift"]
    for block in entry["align"].values():
        _finite_depth_block(block, seqs, 2 * 26 * 64)
    assert entry["align"]["metric"]["sequences"]["alley_1"]["scale"] == 1.0

    # a malformed .dpt (wrong tag): one line naming it, metrics.json untouched
    before = (out / "metrics.json").read_bytes()
    bad = sintel / "training" / "depth" / "bamboo_2" / "frame_0002.dpt"
    bad.write_bytes(np.float32(1.0).tobytes() + bad.read_bytes()[4:])
    code, _, err = run_cli(
        ["evaluate", "depth", "--dataset", "sintel", "--root", str(sintel), "--out", str(out), "--rescore", "--quiet"],
        capsys,
    )
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "not a Sintel .dpt file" in err[0], err
    assert (out / "metrics.json").read_bytes() == before
    # a depth map of another size than its sequence's first: one line naming it
    write_dpt(bad, np.ones((20, 30), np.float32))
    code, _, err = run_cli(
        ["evaluate", "depth", "--dataset", "sintel", "--root", str(sintel), "--out", str(out), "--rescore", "--quiet"],
        capsys,
    )
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "30x20" in err[0], err
    assert (out / "metrics.json").read_bytes() == before


# ---------------------------------------------------------------- pose (ScanNet, Sintel)


def _pose_ok(r, n):
    assert r["failed"] is False and r["reason"] is None and r["num_poses"] == n, r
    assert all(np.isfinite(r[k]) and r[k] >= 0 for k in ("ate", "rpe_trans", "rpe_rot")), r


def test_pose_scannet_metrics_with_a_lost_and_a_short_scene(tmp_path, capsys):
    root = make_scannet(tmp_path / "scannet", ("scene0707_00", "scene0708_00", "scene0709_00"))
    # ScanNet marks lost tracking with -inf: the official conversion fails, the scene is skipped
    gt = root / "scene0709_00" / "pose_90.txt"
    lines = gt.read_text().splitlines()
    lines[1] = " ".join(["-inf"] * 16)
    gt.write_text("\n".join(lines) + "\n")
    make_scannet(root, ("scene0710_00",), n_frames=2)  # 2 poses: Umeyama's covariance is rank-deficient
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["evaluate", "pose", "--dataset", "scannet", "--root", str(root), "--out", str(out), *MODEL], capsys
    )
    assert code == 0, err
    entry = json.loads((out / "metrics.json").read_text())["results"]["pose/scannet"]
    assert set(entry["metrics"]) >= {"ate", "rpe_trans", "rpe_rot"}
    seqs = entry["sequences"]
    assert list(seqs) == entry["sequences_listed"] == ["scene0707_00", "scene0708_00", "scene0709_00", "scene0710_00"]
    _pose_ok(seqs["scene0707_00"], 3)
    _pose_ok(seqs["scene0708_00"], 3)
    lost, short = seqs["scene0709_00"], seqs["scene0710_00"]
    assert lost["failed"] and "non-finite GT pose" in lost["reason"] and lost["ate"] is None
    assert short["failed"] and "Degenerate covariance rank" in short["reason"] and short["num_poses"] == 2
    assert short["ate"] is None and short["rpe_trans"] is None and short["rpe_rot"] is None
    mean = entry["mean"]
    assert mean["num_sequences"] == 2 and mean["num_failed"] == 2
    for k in ("ate", "rpe_trans", "rpe_rot"):
        assert mean[k] == pytest.approx((seqs["scene0707_00"][k] + seqs["scene0708_00"][k]) / 2)
    assert entry["settings"]["crop"] is True and entry["settings"]["reset_interval"] is None
    assert "scene0709_00 (failed: non-finite GT pose" in stdout and "**mean** (2 seq.)" in stdout
    with np.load(out / "scannet" / "scene0707_00.npz") as z:
        assert z["c2w"].shape == (3, 4, 4) and list(z["frame_name"]) == ["0.jpg", "10.jpg", "20.jpg"]


def test_pose_sintel_fourteen_sequences(tmp_path, capsys):
    root = make_sintel(tmp_path / "sintel", SINTEL_POSE_SEQUENCES, n_frames=3, cams=True)
    make_sintel(root, ("bamboo_1",), n_frames=1)  # a depth-only sequence: not part of the pose subset
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["evaluate", "pose", "--dataset", "sintel", "--root", str(root), "--out", str(out), *MODEL], capsys
    )
    assert code == 0, err
    entry = json.loads((out / "metrics.json").read_text())["results"]["pose/sintel"]
    assert entry["sequences_listed"] == list(SINTEL_POSE_SEQUENCES) == list(entry["sequences"])
    for r in entry["sequences"].values():
        _pose_ok(r, 3)
    mean = entry["mean"]
    assert mean["num_sequences"] == 14 and mean["num_failed"] == 0
    assert all(np.isfinite(mean[k]) and mean[k] > 0 for k in ("ate", "rpe_trans", "rpe_rot"))
    assert not (out / "sintel" / "bamboo_1.npz").exists()
    assert stdout.count("| 3 |") == 14

    # depth sintel shares the cache folder name: refused into this --out, one line, before any model
    code, _, err = run_cli(
        ["evaluate", "depth", "--dataset", "sintel", "--root", str(root), "--out", str(out), *MODEL], capsys
    )
    assert code == 2 and len(err) == 1 and "holds pose predictions of sintel" in err[0], err


# ---------------------------------------------------------------- bad input


def _bad_cases(tmp_path):
    bonn = make_bonn(tmp_path / "bonn")
    tum = make_tum(tmp_path / "tum")
    depth = ["evaluate", "depth", "--dataset", "bonn", "--root", str(bonn)]
    pose = ["evaluate", "pose", "--dataset", "tum", "--root", str(tum)]
    return bonn, tum, depth, pose


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys):
    bonn, tum, depth, pose = _bad_cases(tmp_path)
    out = str(tmp_path / "out")
    cases = []
    cases.append(
        (["evaluate", "depth", "--dataset", "bonn", "--root", str(tmp_path / "nowhere"), "--out", out], "nowhere")
    )
    cases.append((["evaluate", "depth", "--dataset", "bonnn", "--root", str(bonn), "--out", out], "bonnn"))
    cases.append((["evaluate", "pose", "--dataset", "bonn", "--root", str(bonn), "--out", out], "unknown pose"))
    cases.append((["evaluate", "depth", "--dataset", "bonn_150", "--root", str(bonn), "--out", out], "rgb_150"))
    for argv, needle in cases:
        code, _, err = run_cli(argv + MODEL, capsys)
        assert code == 2 and len(err) == 1 and needle in err[0], (argv, err)

    # a missing sequence folder
    (bonn / "rgbd_bonn_crowd3" / "rgb_110").rename(bonn / "rgbd_bonn_crowd3" / "rgb_x")
    code, _, err = run_cli(depth + ["--out", out] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and "rgbd_bonn_crowd3" in err[0] and "rgb_110" in err[0]
    (bonn / "rgbd_bonn_crowd3" / "rgb_x").rename(bonn / "rgbd_bonn_crowd3" / "rgb_110")
    # a GT depth map missing (frame and GT counts differ)
    (bonn / "rgbd_bonn_crowd2" / "depth_110" / "00001.png").unlink()
    code, _, err = run_cli(depth + ["--out", out] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and "depth_110" in err[0] and "3 frames but 2" in err[0]

    # a missing and a malformed TUM ground truth
    gt = tum / "rgbd_dataset_freiburg3_walking_xyz" / "groundtruth_90.txt"
    text = gt.read_text()
    gt.unlink()
    code, _, err = run_cli(pose + ["--out", out] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and "groundtruth_90.txt" in err[0] and "no such file" in err[0]
    gt.write_text(text + "1000.9 0 0 zero 0 0 0 1\n")
    code, _, err = run_cli(pose + ["--out", out] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and "groundtruth_90.txt:6" in err[0]
    gt.write_text(text)

    # output folders that are not ours, or inside an input; no model
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    code, _, err = run_cli(pose + ["--out", str(foreign)] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and str(foreign) in err[0]
    assert (foreign / "thesis.tex").exists()
    code, _, err = run_cli(pose + ["--out", str(tum / "out")] + MODEL, capsys)
    assert code == 2 and len(err) == 1 and "inside the input" in err[0]
    code, _, err = run_cli(pose + ["--out", out, "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "no model given" in err[0]
    code, _, err = run_cli(pose + ["--out", out, "--checkpoint", str(tmp_path / "none.pth")], capsys)
    assert code == 2 and len(err) == 1 and "none.pth" in err[0]
    assert not (tmp_path / "out" / "tum").exists() or not any((tmp_path / "out" / "tum").glob("*.npz"))


def test_malformed_depth_gt_is_one_line(tmp_path, capsys):
    bonn = make_bonn(tmp_path / "bonn")
    bad = bonn / "rgbd_bonn_synchronous" / "depth_110" / "00002.png"
    PIL.Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(bad)  # an 8-bit RGB image, not a depth map
    code, _, err = run_cli(
        ["evaluate", "depth", "--dataset", "bonn", "--root", str(bonn), "--out", str(tmp_path / "out")] + MODEL, capsys
    )
    assert code == 2 and len(err) == 1 and "00002.png" in err[0] and "16-bit" in err[0]


def test_checkpoint_digest_covers_config_and_params(tmp_path):
    import hashlib

    ck = tmp_path / "ck"
    (ck / "params" / "sub").mkdir(parents=True)
    (ck / "config.json").write_text("{}")
    (ck / "params" / "a").write_bytes(b"1234")
    (ck / "params" / "sub" / "b").write_bytes(b"5678")
    (ck / "notes.txt").write_text("not part of the weights")
    d0 = runner.checkpoint_digest(ck)
    (ck / "notes.txt").write_text("changed")
    assert runner.checkpoint_digest(ck) == d0 and len(d0) == 64
    (ck / "params" / "sub" / "b").write_bytes(b"5679")
    assert runner.checkpoint_digest(ck) != d0
    pth = tmp_path / "m.pth"
    pth.write_bytes(b"weights")
    assert runner.checkpoint_digest(pth) == hashlib.sha256(b"weights").hexdigest()


def test_bad_inputs_of_kitti_sintel_scannet_give_one_line(tmp_path, capsys):
    """Missing or malformed GT of the other layouts: exit 2 and one line naming the file, before any model."""
    out = tmp_path / "out"

    def fails(task, dataset, root, *needles):
        code, _, err = run_cli(
            ["evaluate", task, "--dataset", dataset, "--root", str(root), "--out", str(out), *MODEL], capsys
        )
        assert code == 2 and len(err) == 1 and all(str(n) in err[0] for n in needles), (dataset, err)

    # KITTI: one drive's GT folder missing, then the whole gathered GT
    kitti = make_kitti(tmp_path / "kitti")
    gt = kitti / KITTI / "groundtruth_depth_gathered"
    (gt / "2011_09_26_drive_0005_sync").rename(gt / "elsewhere")
    fails("depth", "kitti", kitti, gt / "2011_09_26_drive_0005_sync", "no such folder")
    gt.rename(kitti / "gt")
    fails("depth", "kitti", kitti, gt, "no such folder")

    # Sintel depth: a sequence without GT, then one GT map short
    sintel = make_sintel(tmp_path / "sintel", ("alley_1", "bamboo_2"))
    depth = sintel / "training" / "depth"
    (depth / "bamboo_2").rename(sintel / "bamboo_2")
    fails("depth", "sintel", sintel, depth / "bamboo_2", "no such folder")
    (sintel / "bamboo_2").rename(depth / "bamboo_2")
    (depth / "alley_1" / "frame_0002.dpt").unlink()
    fails("depth", "sintel", sintel, depth / "alley_1", "2 frames but 1")

    # ScanNet: a malformed line (15 values), then a missing pose file
    scannet = make_scannet(tmp_path / "scannet")
    pose = scannet / "scene0708_00" / "pose_90.txt"
    lines = pose.read_text().splitlines()
    pose.write_text("\n".join([lines[0], lines[1].rsplit(" ", 1)[0], lines[2]]) + "\n")
    fails("pose", "scannet", scannet, f"{pose}:2", "expected 16 (or 12) values")
    pose.write_text("\n".join([lines[0], lines[1].replace("1.00000000", "one", 1), lines[2]]) + "\n")
    fails("pose", "scannet", scannet, f"{pose}:2", "non-numeric")
    pose.unlink()
    fails("pose", "scannet", scannet, pose, "no such file")

    # Sintel pose: a truncated and a mistagged .cam, then a sequence without camdata
    sp = make_sintel(tmp_path / "sintel_pose", SINTEL_POSE_SEQUENCES, n_frames=1, cams=True)
    cam = sp / "training" / "camdata_left" / "market_5" / "frame_0001.cam"
    good = cam.read_bytes()
    cam.write_bytes(good[:100])
    fails("pose", "sintel", sp, cam, "100 bytes")
    cam.write_bytes(np.float32(1.5).tobytes() + good[4:])
    fails("pose", "sintel", sp, cam, "wrong tag")
    cam.write_bytes(good)
    cams = sp / "training" / "camdata_left" / "temple_3"
    cams.rename(sp / "temple_3")
    fails("pose", "sintel", sp, cams, "no such folder")
    assert not out.exists() or not any(out.rglob("*.npz"))
