"""`human3r-jax reconstruct` end to end on the sample clip (tiny random Human3R), its outputs, bad
inputs, interruption, flat memory on a long input, batching/sharding, and the viewer."""

import json
import os
import resource
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import av
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from human3r_jax import export, runtime
from human3r_jax.cli import main
from human3r_jax.data.images import preprocess
from human3r_jax.data.video import FrameSource
from human3r_jax.models.cut3r import Frame, StepOptions
from human3r_jax.reconstruct import Settings, load_model, reconstruct

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"


@pytest.fixture(scope="module")
def tiny():
    return load_model(random_weights="human3r_tiny")


@pytest.fixture(scope="module")
def smplx(smplx_root):
    from human3r_jax.models.smplx import load_smplx

    return load_smplx(smplx_root)


def write_video(path, frames, fps=10):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_sample_clip_end_to_end(tmp_path, tiny, smplx):
    settings = Settings(max_frames=7, reset_interval=3, ttt3r=True)
    out = reconstruct([SAMPLE], tmp_path / "out", tiny, settings, smplx, progress=False)[0]
    for name in ("reconstruction.npz", "trajectory.tum", "scene.glb", "meta.json", "smplx_faces.npy"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.npz" for i in range(7)]
    summary = np.load(out / "reconstruction.npz")
    assert set(summary.files) == set(export.SUMMARY_KEYS)
    assert summary["c2w"].shape == (7, 4, 4) and tuple(summary["image_size"]) == (288, 512)
    with np.load(out / "frames" / "000003.npz") as f:
        n = int(summary["smpl_valid"][3].sum())
        assert set(f.files) == set(export.FRAME_KEYS)
        assert f["depth"].shape == (288, 512) and f["image"].dtype == np.uint8
        assert f["smpl_verts_world"].shape == (n, 10475, 3) and f["smpl_rotmat"].shape == (n, 53, 3, 3)
    tum = export.load_tum(out / "trajectory.tum")
    assert tum.shape == (7, 8)
    np.testing.assert_allclose(tum[:, 1:4], summary["c2w"][:, :3, 3], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tum[:, 0], np.arange(7) / 12, atol=1e-6)  # the clip's time stamps (12 fps)
    import trimesh

    scene = trimesh.load(out / "scene.glb")
    assert "points" in scene.geometry and "cameras" in scene.geometry
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["frames"] == 7 and meta["random_weights"] and "meaningless" in meta["note"]
    assert sum(k.startswith("person_") for k in scene.geometry) == int(
        summary["smpl_valid"][meta["glb_bodies_frame"]].sum()
    )


def test_person_fields_follow_the_schema_and_both_body_paths_agree(tmp_path, smplx):
    """Frame files and reconstruction.npz hold export.PERSON_FIELDS with their shapes, dtypes and empty-slot
    fill; the streaming bodies (smpl_verts_world) equal runtime.postprocess_humans' on the same slots."""
    model = load_model(random_weights="human3r_tiny", max_humans=12)  # more slots than people: some empty
    out = reconstruct([SAMPLE], tmp_path / "o", model, Settings(max_frames=2, size=224), smplx, progress=False)[0]
    summary = dict(np.load(out / "reconstruction.npz"))
    f, s = summary["smpl_valid"].shape
    assert (f, s) == (2, 12) and summary["smpl_valid"].any() and not summary["smpl_valid"].all()
    post = runtime.postprocess_humans(summary, np.arange(f), summary["c2w"], (224, 224), smplx)
    for i in range(f):
        valid = summary["smpl_valid"][i]
        with np.load(out / "frames" / f"{i:06d}.npz") as z:
            n = int(valid.sum())
            for k, field in export.PERSON_FIELDS.items():
                assert summary[k].dtype == field.dtype and summary[k].shape == (f, s, *field.shape), k
                assert z[k].shape == (n, *field.shape), k
                np.testing.assert_array_equal(summary[k][i, :n], z[k])
                assert (summary[k][i, n:] == field.empty).all(), k
            np.testing.assert_allclose(z["smpl_verts_world"], post["smpl_verts_world"][i][valid], rtol=1e-5, atol=1e-5)


def test_streaming_equals_the_scan_and_the_demo_post_processing(tmp_path, tiny):
    """reconstruct's frame-by-frame loop (reset duplicates, pose chaining, focal) ≡ the parity-tested path."""
    settings = Settings(max_frames=7, reset_interval=3)
    out = reconstruct([SAMPLE], tmp_path / "o", tiny, settings, progress=False)[0]
    summary = np.load(out / "reconstruction.npz")
    imgs = np.stack([preprocess(r.image, 512) for r in FrameSource(SAMPLE, max_frames=7)])
    idx, reset = runtime.reset_views(7, 3)
    frames = Frame(jnp.asarray(imgs[idx][:, None]), jnp.ones((len(idx), 1), bool), jnp.asarray(reset[:, None]))
    carry = runtime.init_carry(tiny.graphdef, tiny.params, 1)
    _, o = runtime.run_sequence(tiny.graphdef, tiny.params, carry, frames, StepOptions(rgb=False, cross=False))
    post = runtime.postprocess(np.asarray(o["camera_pose"][:, 0]), np.asarray(o["pts3d_in_self_view"][:, 0]), reset)
    np.testing.assert_allclose(summary["c2w"], post["c2w"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(summary["intrinsics"][:, 0, 0], post["focal"], rtol=1e-4, atol=1e-4)
    ids = np.asarray(o["smpl_id"][:, 0])[post["view_index"]]
    np.testing.assert_array_equal(summary["smpl_id"], np.where(summary["smpl_valid"], ids, -1))


def test_image_folder_at_224(tmp_path, tiny):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for r in FrameSource(SAMPLE, subsample=8):
        r.image.save(folder / f"{r.index:04d}.png")
    out = reconstruct([folder], tmp_path / "o", tiny, Settings(size=224), progress=False)[0]
    summary = np.load(out / "reconstruction.npz")
    assert tuple(summary["image_size"]) == (224, 224) and len(summary["c2w"]) == 6
    assert summary["frame_name"][0] == "0000.png"


def _cli(capsys, *argv):
    code = main(["reconstruct", *map(str, argv), "--quiet"])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def test_bad_inputs_give_one_clear_line(tmp_path, capsys):
    rw = "--random-weights"
    code, err = _cli(capsys, tmp_path / "missing.mp4", rw, "--out", tmp_path / "o1")
    assert code == 2 and "missing.mp4: no such file" in err[-1]
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    code, err = _cli(capsys, tmp_path / "junk.mp4", rw, "--out", tmp_path / "o2")
    assert code == 2 and "junk.mp4" in err[-1] and "Traceback" not in "\n".join(err)
    with av.open(str(tmp_path / "empty.mp4"), "w") as c:  # a video stream without frames
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    code, err = _cli(capsys, tmp_path / "empty.mp4", rw, "--out", tmp_path / "o3")
    assert code == 2 and "empty.mp4" in err[-1]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    PIL.Image.new("RGB", (160, 90), "red").save(mixed / "a.png")
    PIL.Image.new("RGB", (90, 160), "blue").save(mixed / "b.png")
    code, err = _cli(capsys, mixed, rw, "--out", tmp_path / "o4")
    assert code == 2 and "b.png" in err[-1] and "share a size" in err[-1]
    assert not json.loads((tmp_path / "o4" / "meta.json").read_text())["complete"]
    code, err = _cli(capsys, SAMPLE, "--out", tmp_path / "o5")  # no checkpoint: how to get one
    assert code == 2 and "human3r_896L" in err[-1] and "--random-weights" in err[-1]
    torch = pytest.importorskip("torch")
    torch.save(
        {"model": {}, "args": {"model": "AsymmetricCroCo3DStereo(pos_embed='RoPE100')"}}, tmp_path / "dust3r.pth"
    )
    code, err = _cli(capsys, SAMPLE, "--checkpoint", tmp_path / "dust3r.pth", "--out", tmp_path / "o6")
    assert code == 2 and "dust3r.pth" in err[-1] and "ARCroco3DStereo" in err[-1]
    code, err = _cli(capsys, SAMPLE, rw, "--smplx", tmp_path / "nowhere", "--out", tmp_path / "o7")
    assert code == 2 and "nowhere" in err[-1] and "smpl-x.is.tue.mpg.de" in err[-1]


def test_corrupt_frame_in_the_middle_keeps_the_frames_done(tmp_path, tiny, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for r in FrameSource(SAMPLE, max_frames=5):
        r.image.save(folder / f"{r.index:04d}.png")
    (folder / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["reconstruct", str(folder), "--random-weights", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "0002.png" in err
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert not meta["complete"] and "0002.png" in meta["error"] and meta["frames"] == 2
    assert len(np.load(tmp_path / "o" / "reconstruction.npz")["c2w"]) == 2
    assert not list((tmp_path / "o").rglob(".*.tmp"))  # nothing half-written


def test_interrupt_leaves_complete_files_for_the_frames_done(tmp_path, tiny):
    seen = []

    def stop_at_three(j, res):
        seen.append(j)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct([SAMPLE], tmp_path / "o", tiny, Settings(max_frames=10), on_frame=stop_at_three, progress=False)
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert not meta["complete"] and meta["error"] == "interrupted" and meta["frames"] == 3
    assert len(export.load_tum(tmp_path / "o" / "trajectory.tum")) == 3
    assert len(list((tmp_path / "o" / "frames").iterdir())) == 3


def test_host_memory_stays_flat_on_a_long_input(tmp_path, tiny):
    """300 frames: resident memory after frame 300 within 40 MB of frame 60 (bounded point buffer)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(48, 400, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(base[:, i % 300 : i % 300 + 64]) for i in range(300)]
    clip = write_video(tmp_path / "long.mp4", frames)
    rss = {}

    def record(j, res):
        record.n += 1
        if record.n in (60, 300):
            rss[record.n] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (peak so far)

    record.n = 0
    reconstruct([clip], tmp_path / "o", tiny, Settings(size=224, max_points=20_000), on_frame=record, progress=False)
    assert record.n == 300
    print("peak RSS after 60 / 300 frames (MB):", rss)
    assert rss[300] - rss[60] < 40


BATCH_SCRIPT = r"""
import chex
chex.set_n_cpu_devices(4)  # before JAX starts its backends: four fake CPU devices
import sys, json, numpy as np, jax
from human3r_jax.reconstruct import Settings, load_model, reconstruct, _mesh_and_sharding
assert len(jax.devices()) == 4, jax.devices()
assert _mesh_and_sharding(4) is not None
model = load_model(random_weights="human3r_tiny")
inputs, out = sys.argv[1:5], sys.argv[5]
reconstruct(inputs, out, model, Settings(max_frames=int(sys.argv[6]), size=224), progress=False)
print("ok")
"""


def test_batched_inputs_sharded_over_four_devices_equal_single_runs(tmp_path, tiny):
    clips = []
    for k, n in enumerate((6, 4, 6, 5)):  # different lengths: the shorter ones are padded
        frames = [np.asarray(r.image) for r in FrameSource(SAMPLE, subsample=k + 1, max_frames=n)]
        clips.append(write_video(tmp_path / f"clip{k}.mp4", frames))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", BATCH_SCRIPT, *map(str, clips), str(tmp_path / "batch"), "6"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    for k, clip in enumerate(clips):
        single = reconstruct([clip], tmp_path / f"single{k}", tiny, Settings(max_frames=6, size=224), progress=False)[0]
        a, b = np.load(tmp_path / "batch" / clip.stem / "reconstruction.npz"), np.load(single / "reconstruction.npz")
        assert len(a["c2w"]) == len(b["c2w"])
        np.testing.assert_allclose(a["c2w"], b["c2w"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(a["smpl_id"], b["smpl_id"])
        with (
            np.load(single / "frames" / "000002.npz") as fb,
            np.load(tmp_path / "batch" / clip.stem / "frames" / "000002.npz") as fa,
        ):
            assert np.linalg.norm(fa["depth"] - fb["depth"]) / np.linalg.norm(fb["depth"]) < 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_serves_the_scene(tmp_path, tiny, smplx):
    pytest.importorskip("viser")
    from human3r_jax.viewer import SceneViewer, ViewerError

    out = reconstruct([SAMPLE], tmp_path / "o", tiny, Settings(max_frames=4), smplx, progress=False)[0]
    port = _free_port()
    viewer = SceneViewer(out, port=port)
    try:
        assert viewer.port == port
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in html.lower()
        summary = np.load(out / "reconstruction.npz")
        people = lambda: sorted(k for k in viewer.handles if k.startswith("/people/"))
        assert len(people()) == int(summary["smpl_valid"][3].sum())
        assert len([k for k in viewer.handles if k.startswith("/cameras/")]) == 4
        viewer.frame.value = 1  # the slider drives the scene
        assert len([k for k in viewer.handles if k.startswith("/cameras/")]) == 2
        assert people() == sorted(f"/people/{i}" for i in summary["smpl_id"][1][summary["smpl_valid"][1]])
        n_points = len(viewer.handles["points"].points)
        viewer.conf.value = 1e9  # nothing is that confident
        assert len(viewer.handles["points"].points) == 0 < n_points
    finally:
        viewer.stop()
    with pytest.raises(ViewerError, match="no reconstruction.npz"):
        SceneViewer(tmp_path, port=_free_port())
