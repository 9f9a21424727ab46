"""Known cameras in `reconstruct` (human3r_jax.cameras): given intrinsics (every point re-derived through K,
heads kept on their pixel), given camera poses (the frames moved onto them by the fitted Sim(3)), a static
camera, the file formats, and bad inputs refused in one line before anything is written. A tiny random
Human3R on 4 frames of the sample clip at --size 224 (a resize and a crop between raw frames and model input)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from human3r_jax import cameras, export, runtime
from human3r_jax.data.images import intrinsics_to_model
from human3r_jax.data.video import FrameSource
from human3r_jax.geometry import matrix_to_quat, rotvec_to_rotmat
from human3r_jax.models.smplx import HEAD
from human3r_jax.reconstruct import Settings, _frame_geometry, check_settings, load_model, prepare, reconstruct

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"  # 320x180, 12 fps
RAW_W, RAW_H, SIZE, FRAMES = 320, 180, 224, 4
GIVEN = (300.0, 280.0, 150.0, 100.0)  # fx, fy, cx, cy of the raw frames; the random model estimates f ≈ 0


@pytest.fixture(scope="module")
def tiny():
    return load_model(random_weights="human3r_tiny")


@pytest.fixture(scope="module")
def smplx(smplx_root):
    from human3r_jax.models.smplx import load_smplx

    return load_smplx(smplx_root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The clip's first frames as PNG files (lossless: the same model input as the video)."""
    path = tmp_path_factory.mktemp("frames")
    for r in FrameSource(SAMPLE, max_frames=FRAMES):
        r.image.save(path / f"img_{r.index:02d}.png")
    return path


def _run(out, tiny, smplx=None, source=SAMPLE, **settings):
    settings = Settings(**{"max_frames": FRAMES, "size": SIZE, **settings})
    return reconstruct([source], out, tiny, settings, smplx, progress=False)[0]


def _frames(out):
    n = len(list((out / "frames").iterdir()))
    frames = []
    for i in range(n):
        with np.load(out / "frames" / f"{i:06d}.npz") as z:
            frames.append(dict(z))
    return frames


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny, smplx):
    """The run without known cameras: its frame files (compiled under the tests' strict promotion, so that
    the later runs reuse the compiled step)."""
    with jax.numpy_dtype_promotion("strict"):
        return _frames(_run(tmp_path_factory.mktemp("plain") / "o", tiny, smplx))


def _to_camera(frame, key):
    """Points of a frame file [..., 3] from the world into its camera frame (float64)."""
    c2w = frame["c2w"].astype(np.float64)
    return (frame[key].astype(np.float64) - c2w[:3, 3]) @ c2w[:3, :3]


def _pixels(points, k):
    """Pinhole projection [..., 2] of camera-frame points [..., 3]."""
    return points[..., :2] / points[..., 2:] * k[[0, 1], [0, 1]] + k[:2, 2]


# ---------------------------------------------------------------- formats


def test_intrinsics_file_formats_parse_equal(tmp_path):
    rng = np.random.default_rng(0)
    k = np.tile(np.eye(3), (3, 1, 1))
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2] = (rng.uniform(100, 400, 3) for _ in range(4))
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "one.npy", k[0])
    np.savetxt(tmp_path / "k.txt", k.reshape(3, 9), header="one K per frame")
    np.savetxt(tmp_path / "one.txt", k[0], delimiter=",")
    (tmp_path / "k.json").write_text(json.dumps(k.tolist()))
    (tmp_path / "K.json").write_text(json.dumps({"K": k[0].tolist()}))
    fx, fy, cx, cy = map(float, k[0, [0, 1, 0, 1], [0, 1, 2, 2]])
    (tmp_path / "f.json").write_text(json.dumps({"fx": fx, "fy": fy, "cx": cx, "cy": cy}))
    (tmp_path / "cameras.txt").write_text(
        f"# Camera list with one line of data per camera:\n1 OPENCV 320 180 {fx!r} {fy!r} {cx + 0.5!r} {cy + 0.5!r} "
        "0.1 -0.02 0 0\n"
    )
    (tmp_path / "simple.txt").write_text(f"7 SIMPLE_RADIAL 320 180 {fx!r} {cx + 0.5!r} {cy + 0.5!r} 0.01\n")
    for name in ("k.npy", "k.txt", "k.json"):
        np.testing.assert_allclose(cameras.parse_intrinsics(tmp_path / name), k, rtol=1e-15, err_msg=name)
    for name in ("one.npy", "one.txt", "K.json", "f.json", "cameras.txt"):
        np.testing.assert_allclose(cameras.parse_intrinsics(str(tmp_path / name)), k[:1], rtol=1e-15, err_msg=name)
    np.testing.assert_allclose(cameras.parse_intrinsics(f"{fx!r},{fy!r},{cx!r},{cy!r}"), k[:1], rtol=1e-15)
    simple = cameras.parse_intrinsics(tmp_path / "simple.txt")[0]
    np.testing.assert_allclose(simple[[0, 1, 0, 1], [0, 1, 2, 2]], [fx, fx, cx, cy], rtol=1e-15)


def test_umeyama_equals_evo_and_degenerate_trajectories():
    geometry = pytest.importorskip("evo.core.geometry")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    r = np.asarray(rotvec_to_rotmat(jnp.asarray([0.3, -1.2, 0.5])), np.float64)
    y = 1.7 * x @ r.T + [1.0, -2.0, 0.5] + rng.normal(scale=0.05, size=x.shape)
    s, rot, t = cameras.umeyama(x, y)
    r_evo, t_evo, s_evo = geometry.umeyama_alignment(x.T, y.T, with_scale=True)
    np.testing.assert_allclose([s, *rot.ravel(), *t], [s_evo, *r_evo.ravel(), *t_evo], rtol=1e-10, atol=1e-12)
    a = cameras.align_trajectory(x, y)
    assert a["scale_fitted"] and a["ate_after"] < 0.1 < a["ate_before"]
    still = cameras.align_trajectory(np.ones((3, 3)), np.zeros((3, 3)) + [4.0, 5.0, 6.0])  # no extent: no scale
    assert not still["scale_fitted"] and still["scale"] == 1.0 and still["ate_after"] == pytest.approx(0, abs=1e-12)


def test_frame_geometry_keeps_depth_and_head_pixels_under_the_given_k():
    """Synthetic points seen through a pinhole K (f = 200: the estimate recovers it) and heads; with another
    K given, the points keep z and land on their pixels through it, the heads keep z and their pixel."""
    b, h, w = 2, 12, 16
    rng = np.random.default_rng(2)
    z = rng.uniform(1, 5, (b, h, w)).astype(np.float32)
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    pts = np.stack([(u - w // 2) * z / 200, (v - h // 2) * z / 200, z], -1).astype(np.float32)
    heads = np.concatenate([rng.uniform(-1, 1, (b, 3, 2)), rng.uniform(1, 4, (b, 3, 1))], -1).astype(np.float32)
    k = np.array([[[310, 0, 6.5], [0, 290, 5.0], [0, 0, 1]], [[150, 0, 9.0], [0, 160, 7.5], [0, 0, 1]]], np.float32)
    pose = np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float32), (b, 1))
    base = np.tile(np.eye(4, dtype=np.float32), (b, 1, 1))
    _, _, focal, cam, moved, world = _frame_geometry(pose, pts, base, jnp.asarray(k), jnp.asarray(heads))
    np.testing.assert_allclose(focal, 200, rtol=1e-4)
    cam, moved, focal = np.asarray(cam, np.float64), np.asarray(moved, np.float64), np.asarray(focal, np.float64)
    np.testing.assert_array_equal(cam[..., 2], z)
    for j in range(b):
        assert np.abs(_pixels(cam[j], k[j]) - np.stack([u, v], -1)).max() < 1e-3
        estimated = runtime.intrinsics(focal[j : j + 1], h, w)[0]
        np.testing.assert_allclose(_pixels(moved[j], k[j]), _pixels(heads[j], estimated), atol=1e-3)
    np.testing.assert_allclose(moved[..., 2], heads[..., 2], rtol=1e-7)
    np.testing.assert_allclose(world, cam, rtol=1e-6, atol=1e-6)  # identity pose


# ---------------------------------------------------------------- runs


def test_given_intrinsics(tmp_path, tiny, smplx, plain):
    given = "{},{},{},{}".format(*GIVEN)
    out = _run(tmp_path / "o", tiny, smplx, intrinsics=given)
    k_model = intrinsics_to_model(cameras.parse_intrinsics(given)[0], RAW_W, RAW_H, SIZE)
    frames = _frames(out)
    assert len(frames) == FRAMES and any(len(f["smpl_id"]) for f in frames)
    for f, p in zip(frames, plain):
        assert abs(p["intrinsics"][0, 0] - k_model[0, 0]) > 10  # the estimate differs
        np.testing.assert_allclose(f["intrinsics"], k_model, rtol=1e-6)
        np.testing.assert_allclose(f["depth"], p["depth"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(f["c2w"], p["c2w"], rtol=1e-6, atol=1e-6)
        cam = _to_camera(f, "pts3d_world")
        h, w = f["depth"].shape
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        # float32 world points: the pixel is exact to 1e-3 where the depth is not near 0 (random weights)
        sure = np.abs(cam[..., 2]) > 0.05 * np.median(np.abs(cam[..., 2]))
        assert sure.mean() > 0.9
        error = np.abs(_pixels(cam, k_model) - np.stack([u, v], -1))[sure]
        assert error.max() < 1e-3, error.max()
        # each head keeps its depth and its pixel (under the plain run's estimated K, now under the given K)
        np.testing.assert_array_equal(f["smpl_id"], p["smpl_id"])
        np.testing.assert_allclose(f["smpl_transl"][:, 2], p["smpl_transl"][:, 2], rtol=1e-6)
        np.testing.assert_allclose(
            _pixels(f["smpl_transl"].astype(np.float64), k_model),
            _pixels(p["smpl_transl"].astype(np.float64), p["intrinsics"].astype(np.float64)),
            atol=1e-3,
        )
        # the bodies moved rigidly with their heads (world: R_c2w times the head's move)
        shift = (f["smpl_transl"] - p["smpl_transl"]) @ f["c2w"][:3, :3].T
        np.testing.assert_allclose(f["smpl_verts_world"], p["smpl_verts_world"] + shift[:, None], atol=2e-4)
        np.testing.assert_allclose(f["smpl_joints_world"], p["smpl_joints_world"] + shift[:, None], atol=2e-4)
        np.testing.assert_allclose(_to_camera(f, "smpl_joints_world")[:, HEAD], f["smpl_transl"], atol=1e-4)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["cameras"]["intrinsics"] == "given" and meta["settings"]["intrinsics"] == given
    summary = np.load(out / "reconstruction.npz")
    np.testing.assert_allclose(summary["intrinsics"], np.tile(k_model, (FRAMES, 1, 1)), rtol=1e-6)


def test_per_frame_intrinsics_by_input_index_and_a_static_camera(tmp_path, tiny):
    """--subsample 2: frames 0, 2, 4 take rows 0, 2, 4 of the K file; static: every c2w the identity, the
    world points the camera-frame points."""
    k = np.tile(np.eye(3), (6, 1, 1))
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2] = 200 + 20 * np.arange(6), 190.0, 160.0, 90.0 - np.arange(6)
    np.save(tmp_path / "k.npy", k)
    out = _run(tmp_path / "o", tiny, subsample=2, max_frames=3, intrinsics=str(tmp_path / "k.npy"), static_camera=True)
    frames = _frames(out)
    assert [int(f["frame_index"]) for f in frames] == [0, 2, 4]
    for f in frames:
        k_model = intrinsics_to_model(k[int(f["frame_index"])], RAW_W, RAW_H, SIZE)
        np.testing.assert_allclose(f["intrinsics"], k_model, rtol=1e-6)
        np.testing.assert_array_equal(f["c2w"], np.eye(4))
        z = f["depth"].astype(np.float64)
        u, v = np.meshgrid(np.arange(z.shape[1]), np.arange(z.shape[0]))
        cam = np.stack([(u - k_model[0, 2]) * z / k_model[0, 0], (v - k_model[1, 2]) * z / k_model[1, 1], z], -1)
        np.testing.assert_allclose(f["pts3d_world"], cam, rtol=1e-5, atol=1e-5)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cameras"]["poses"] == "static" and meta["cameras"]["intrinsics"] == "given"


def _sim3_of(plain):
    """The plain run's cameras moved by a known similarity (rotation, scale 2.5, shift) → c2w [F, 4, 4]."""
    r = np.asarray(rotvec_to_rotmat(jnp.asarray([0.4, 0.9, -0.3])), np.float64)
    given = np.tile(np.eye(4), (len(plain), 1, 1))
    for g, p in zip(given, plain):
        c2w = p["c2w"].astype(np.float64)
        g[:3, :3] = r @ c2w[:3, :3]
        g[:3, 3] = 2.5 * r @ c2w[:3, 3] + [3.0, -1.0, 2.0]
    return given


def _write_colmap(path, c2w, names):
    """COLMAP images.txt (world-to-camera; a line of 2-D points after each image) in shuffled order."""
    w2c = np.linalg.inv(c2w)
    q = np.asarray(matrix_to_quat(jnp.asarray(w2c[:, :3, :3], jnp.float32)), np.float64)
    lines = ["# Image list with two lines of data per image:"]
    for i in (2, 0, 3, 1):
        points = "10.5 20.25 -1 33.0 41.5 7" if i % 2 else ""  # POINTS2D[] as (X, Y, POINT3D_ID), or none
        lines += [f"{i + 1} " + " ".join(repr(float(x)) for x in (*q[i], *w2c[i, :3, 3])) + f" 1 {names[i]}", points]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("kind", ["tum", "colmap"])
def test_given_poses(tmp_path, tiny, smplx, plain, folder, kind, capsys):
    given = _sim3_of(plain)
    if kind == "tum":
        export.save_tum(tmp_path / "poses.tum", np.asarray([p["time"] for p in plain]), given)
        out = _run(tmp_path / "o", tiny, smplx, camera_poses=tmp_path / "poses.tum")
    else:  # an image folder, matched by name
        _write_colmap(tmp_path / "images.txt", given, sorted(p.name for p in folder.iterdir()))
        out = _run(tmp_path / "o", tiny, smplx, source=folder, camera_poses=tmp_path / "images.txt")
    meta = json.loads((out / "meta.json").read_text())
    a = meta["cameras"]["alignment"]
    assert meta["complete"] and meta["cameras"]["poses"] == "given" and a["frames"] == FRAMES
    assert a["scale"] == pytest.approx(2.5, rel=1e-5) and a["scale_fitted"]
    assert a["ate_after"] < 1e-4 * a["ate_before"]
    assert f"({FRAMES} frames): scale 2.5" in capsys.readouterr().err
    for f, p, g in zip(_frames(out), plain, given):
        np.testing.assert_allclose(f["c2w"], g, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f["depth"], 2.5 * p["depth"], rtol=1e-5)
        world = (2.5 * _to_camera(p, "pts3d_world")) @ g[:3, :3].T + g[:3, 3]
        np.testing.assert_allclose(f["pts3d_world"], world, rtol=1e-5, atol=1e-5 * np.abs(world).max())
        np.testing.assert_allclose(f["smpl_transl"], 2.5 * p["smpl_transl"], rtol=1e-5, atol=1e-6)
        # the body keeps its size and its pose in the camera, its head moved to s · transl
        for key in ("smpl_verts_world", "smpl_joints_world"):
            np.testing.assert_allclose(
                _to_camera(f, key) - f["smpl_transl"][:, None],
                _to_camera(p, key) - p["smpl_transl"][:, None],
                atol=1e-4,
            )
        np.testing.assert_allclose(_to_camera(f, "smpl_joints_world")[:, HEAD], f["smpl_transl"], atol=1e-4)
    summary = np.load(out / "reconstruction.npz")
    np.testing.assert_allclose(summary["c2w"], given, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(export.load_tum(out / "trajectory.tum")[:, 1:4], given[:, :3, 3], rtol=1e-6)
    # scene.glb's points are the moved ones
    import trimesh

    glb = np.asarray(trimesh.load(out / "scene.glb").geometry["points"].vertices, np.float32)
    moved = {tuple(x) for f in _frames(out) for x in f["pts3d_world"].reshape(-1, 3)}
    assert len(glb) > 100 and all(tuple(x) in moved for x in glb)


def test_interrupted_run_moves_the_frames_it_has(tmp_path, tiny, plain):
    given = _sim3_of(plain)
    export.save_tum(tmp_path / "poses.tum", np.asarray([p["time"] for p in plain]), given)

    def stop_after_three(j, res):
        stop_after_three.n += 1
        if stop_after_three.n == 3:
            raise KeyboardInterrupt

    stop_after_three.n = 0
    settings = Settings(max_frames=FRAMES, size=SIZE, camera_poses=str(tmp_path / "poses.tum"))
    with pytest.raises(KeyboardInterrupt):
        reconstruct([SAMPLE], tmp_path / "o", tiny, settings, on_frame=stop_after_three, progress=False)
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert not meta["complete"] and meta["cameras"]["alignment"]["frames"] == 3
    assert meta["cameras"]["alignment"]["scale"] == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose([f["c2w"] for f in _frames(tmp_path / "o")], given[:3], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bad input


def _refused(tmp_path, match, **settings):
    """prepare() refuses with one CameraError line matching `match`, and writes nothing."""
    out = tmp_path / "never"
    with pytest.raises(cameras.CameraError) as e:
        prepare([SAMPLE], out, Settings(**{"max_frames": FRAMES, "size": SIZE, **settings}))
    message = str(e.value)
    assert "\n" not in message and match in message, message
    assert not out.exists()
    return message


def test_bad_intrinsics_are_refused_in_one_line(tmp_path):
    _refused(tmp_path, "--intrinsics: expected fx,fy,cx,cy", intrinsics="300,280,150")
    _refused(tmp_path, "the focal lengths must be positive (fx=0", intrinsics="0,280,150,100")
    _refused(tmp_path, "--intrinsics: non-finite value", intrinsics="nan,280,150,100")
    k_npy, k_txt, colmap = tmp_path / "k.npy", tmp_path / "k.txt", tmp_path / "cameras.txt"
    _refused(tmp_path, "no such file", intrinsics=str(k_npy))
    np.save(k_npy, np.tile(np.diag([300.0, 280.0, 1.0]), (3, 1, 1)))  # 3 of the 4 frames
    _refused(tmp_path, f"--intrinsics {k_npy}: 3 matrices, but input frame 3", intrinsics=k_npy)
    k_txt.write_text("300 0 150 0 280 100 0 0 1\n300 0 150 0 -280 100 0 0 1\n")
    _refused(tmp_path, f"{k_txt}: line 2: the focal lengths must be positive", intrinsics=k_txt)
    k_txt.write_text("300 0 150\n0 280 oops\n0 0 1\n")
    _refused(tmp_path, f"{k_txt}: line 2: expected 3 numbers", intrinsics=k_txt)
    colmap.write_text("1 PINHOLE 320 180 300 280 150\n")
    _refused(tmp_path, f"{colmap}: line 1: PINHOLE takes 4 numeric parameters", intrinsics=colmap)


def test_bad_poses_are_refused_in_one_line(tmp_path, folder):
    tum = tmp_path / "poses.tum"
    tum.write_text("".join(f"{i / 12} 0 0 {i} 0 0 0 1\n" for i in range(3)))  # 3 poses for 4 frames
    _refused(tmp_path, f"{tum}: no pose within 0.04167 of frame 3", camera_poses=tum)
    tum.write_text("0 0 0 0 0 0 0 1\n0.0833 0 0 1 0 0 0\n")
    _refused(tmp_path, f"{tum}: line 2: expected 8 finite numbers", camera_poses=tum)
    colmap = tmp_path / "images.txt"
    _write_colmap(colmap, np.tile(np.eye(4), (4, 1, 1)), [f"f{i}.png" for i in range(4)])
    with pytest.raises(cameras.CameraError, match="no image named 'img_00.png'"):
        prepare([folder], tmp_path / "never", Settings(camera_poses=colmap))
    _refused(tmp_path, f"{colmap}: 4 images, but the video gives 3 frames", camera_poses=colmap, max_frames=3)
    with pytest.raises(cameras.CameraError, match="--static-camera and --camera-poses"):
        check_settings(Settings(camera_poses=colmap, static_camera=True))
    with pytest.raises(cameras.CameraError, match="--camera-poses applies to one input"):
        prepare([SAMPLE, folder], tmp_path / "never", Settings(camera_poses=colmap))
