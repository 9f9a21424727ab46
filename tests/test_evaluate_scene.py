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
from human3r_jax.evaluation import frames, runner, scene
from human3r_jax.evaluation.depth_data import BONN_SEQUENCES
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


def make_tum(root: Path, seqs=("rgbd_dataset_freiburg3_sitting_static", "rgbd_dataset_freiburg3_walking_xyz"),
             n_frames: int = 4) -> Path:
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


def run_cli(argv, capsys):
    code = cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, [line for line in cap.err.splitlines() if line.strip() and "RANDOM WEIGHTS" not in line]


# ---------------------------------------------------------------- frame loader


@pytest.mark.parametrize("raw,expected", [((640, 480), (512, 384)), ((1024, 436), (512, 208)),
                                          ((1242, 375), (512, 144)), ((1296, 968), (512, 368)),
                                          ((1080, 1920), (288, 512)), ((4112, 3008), (512, 368))])
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
    code, stdout, err = run_cli(["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out),
                                 *MODEL], capsys)
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
    code, _, err = run_cli(["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out),
                            *MODEL, "--align", "scale", "--align", "metric"], capsys)
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "bonn").glob("*.npz")} == mtimes
    entry = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]
    assert list(entry["align"]) == ["scale", "metric"]


def test_interrupted_run_resumes_and_rescore_needs_no_model(tmp_path, capsys, monkeypatch):
    root, out = make_bonn(tmp_path / "bonn"), tmp_path / "out"

    def stop(name):
        raise KeyboardInterrupt("after " + name)

    with pytest.raises(KeyboardInterrupt):
        scene.evaluate("depth", "bonn", root, out, random_weights="cut3r_tiny", size=224, progress=False,
                       on_sequence=stop, print_table=False)
    cached = sorted(p.name for p in (out / "bonn").glob("*.npz"))
    assert cached == ["balloon2.npz"] and not (out / "metrics.json").exists()
    first = (out / "bonn" / "balloon2.npz").stat().st_mtime_ns

    # --rescore before the cache is complete: one line naming the missing sequence
    code, _, err = run_cli(["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out),
                            "--rescore", "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "crowd2.npz" in err[0]

    seen = []
    scene.evaluate("depth", "bonn", root, out, random_weights="cut3r_tiny", size=224, progress=False,
                   on_sequence=seen.append, print_table=False)
    assert seen == list(BONN_SEQUENCES[1:])
    assert (out / "bonn" / "balloon2.npz").stat().st_mtime_ns == first
    before = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("human3r_jax.reconstruct.load_model", no_model)
    monkeypatch.setattr(runtime, "step", no_model)
    code, stdout, err = run_cli(["evaluate", "depth", "--dataset", "bonn", "--root", str(root), "--out", str(out),
                                 "--rescore", "--align", "scale", "--align", "metric", "--quiet"], capsys)
    assert code == 0, err
    after = json.loads((out / "metrics.json").read_text())["results"]["depth/bonn"]
    assert after["align"]["scale"] == before["align"]["scale"]
    assert "metric" in after["align"] and "align metric" in stdout
    # metric (no alignment) differs from the scale-aligned numbers
    assert after["align"]["metric"]["mean"]["abs_rel"] != after["align"]["scale"]["mean"]["abs_rel"]


# ---------------------------------------------------------------- pose (TUM)


def test_pose_tum_metrics_with_resets(tmp_path, capsys):
    root, out = make_tum(tmp_path / "tum"), tmp_path / "out"
    code, stdout, err = run_cli(["evaluate", "pose", "--dataset", "tum", "--root", str(root), "--out", str(out),
                                 *MODEL, "--reset-interval", "2"], capsys)
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
    code, _, err = run_cli(["evaluate", "pose", "--dataset", "tum", "--root", str(root), "--out", str(out),
                            *MODEL], capsys)
    assert code == 2 and len(err) == 1 and "other settings" in err[0] and "reset_interval" in err[0]


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
    cases.append((["evaluate", "depth", "--dataset", "bonn", "--root", str(tmp_path / "nowhere"), "--out", out],
                  "nowhere"))
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
    code, _, err = run_cli(["evaluate", "depth", "--dataset", "bonn", "--root", str(bonn), "--out",
                            str(tmp_path / "out")] + MODEL, capsys)
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
