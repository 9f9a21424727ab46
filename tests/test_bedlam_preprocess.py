"""BEDLAM preprocessing on a tiny fake release (spec §7.1).

The fake release has a Training scene (4 sequences: two written, one without labels, one without a
camera file), a Test scene (labels as `_30fps.npz` in another sub-folder, one env mask missing), an
HDRI scene and a closeup scene (complete, but excluded) and a scene without labels. Expected camera
poses are derived by hand from Unreal's conventions (positive yaw turns right, positive pitch looks
up, positive roll lowers the right side), not with the module's helpers.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest

from human3r_jax.data import bedlam as B
from human3r_jax.data import bedlam_preprocess as bp
from human3r_jax.data.schema import CAMERA_SPEC, SMPL_KEYS, SUBFOLDERS, label_spec

OpenEXR = pytest.importorskip("OpenEXR")

H, W = 18, 32
SCENE_A = "20221010_3-10_250_batch01hand_orbit_bigOffice"
SCENE_B = "20221019_3-8_250_highbmihand_orbit_stadium"  # one of the three Test scenes
HDRI = "20221010_3_1000_batch01hand"
CLOSEUP = "20221020_3-8_250_highbmihand_closeup_suburb_a"
NO_LABELS = "20221011_1_250_batch01hand_static_highSchoolGym"
S30, C30 = np.sin(np.pi / 6), np.cos(np.pi / 6)

# (scene, seq) → {render index: (x, y, z cm, yaw, pitch, roll degrees)} for the hand-checked poses.
CAMERAS = {
    (SCENE_A, "seq_000000"): {
        0: (100.0, 200.0, 300.0, 90.0, 0.0, 0.0),
        5: (0.0, 0.0, 0.0, 0.0, 30.0, 0.0),
        10: (-50.0, 0.0, 25.0, 0.0, 0.0, 30.0),
    },
    (SCENE_A, "seq_000001"): {0: (0.0, 0.0, 0.0, 90.0, 30.0, 0.0)},
}
# c2w rotations by hand; columns = the camera's right, down, forward in the OpenCV world
# (x = Unreal y, y = −Unreal z, z = Unreal x).
EXPECTED_POSES = {
    # yaw 90: looks along Unreal +y = world +x; right = Unreal −x = world −z; centre (1, 2, 3) m → (2, −3, 1).
    (SCENE_A, "seq_000000", 0): ([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], [2.0, -3.0, 1.0]),
    # pitch 30: forward = Unreal (c, 0, s) = world (0, −s, c); down = world (0, c, s); right unchanged.
    (SCENE_A, "seq_000000", 5): ([[1, 0, 0], [0, C30, -S30], [0, S30, C30]], [0.0, 0.0, 0.0]),
    # roll 30: right = Unreal (0, c, −s) = world (c, s, 0); down = world (−s, c, 0); forward unchanged.
    (SCENE_A, "seq_000000", 10): ([[C30, -S30, 0], [S30, C30, 0], [0, 0, 1]], [0.0, -0.25, -0.5]),
    # yaw 90 then pitch 30 about the turned camera: forward = Unreal (0, c, s) = world (c, −s, 0);
    # right = world (0, 0, −1); down = forward × right = world (s, c, 0).
    (SCENE_A, "seq_000001", 0): ([[0, S30, C30], [0, C30, -S30], [-1, 0, 0]], [0.0, 0.0, 0.0]),
}


def _write_sequence(scene_dir: Path, seq: str, n: int, rng, camera: bool = True) -> None:
    for sub in ("png", "depth", "masks"):
        (scene_dir / sub / seq).mkdir(parents=True)
    for i in range(n):
        stem = f"{seq}_{i:04d}"
        PIL.Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            scene_dir / "png" / seq / f"{stem}.png"
        )
        depth_cm = rng.uniform(50.0, 5000.0, (H, W)).astype(np.float32)
        with OpenEXR.File(
            {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Depth": depth_cm}
        ) as f:
            f.write(str(scene_dir / "depth" / seq / f"{stem}_depth.exr"))
        env = np.where(rng.random((H, W)) < 0.7, 255, 0).astype(np.uint8)
        # Saved as RGB: the env masks are read as grey levels whatever their mode.
        PIL.Image.fromarray(np.repeat(env[..., None], 3, -1)).save(scene_dir / "masks" / seq / f"{stem}_env.png")
    if camera:
        cam_dir = scene_dir / "ground_truth" / "camera"
        cam_dir.mkdir(parents=True, exist_ok=True)
        rows = ["name,x,y,z,yaw,pitch,roll,focal_length,sensor_width,sensor_height,hfov"]
        for i in range(n):
            x, y, z, yaw, pitch, roll = CAMERAS.get((scene_dir.name, seq), {}).get(i, rng.uniform(-90, 90, 6))
            rows.append(f"{seq}_{i:04d},{x},{y},{z},{yaw},{pitch},{roll},{20 + i},36,20.25,52.0")
        (cam_dir / f"{seq}_camera.csv").write_text("\n".join(rows) + "\n")


def _write_be_seq(scene_dir: Path, seqs: list[str]) -> None:
    scene_dir.mkdir(parents=True, exist_ok=True)
    rows = ["Index,Type,Body,X,Y,Z,Yaw,Pitch,Roll,Comment"]
    for k, seq in enumerate(seqs):
        rows.append(f"{2 * k},Group,None,0,0,0,0,0,0,sequence_name={seq};seq_len=12;start_frame=0")
        rows.append(f"{2 * k + 1},Body,rp_body_{k},1,2,0,0,0,0,start_frame=0;texture_body=skin")
    (scene_dir / "be_seq.csv").write_text("\n".join(rows) + "\n")


def _write_labels(path: Path, persons: dict[str, int], rng) -> dict[str, np.ndarray]:
    """Label rows: `persons[imgname]` persons per image name, in that order."""
    names = [name for name, p in persons.items() for _ in range(p)]
    n = len(names)
    cam_ext = np.tile(np.eye(4), (n, 1, 1))
    cam_ext[:, :3, 3] = rng.normal(size=(n, 3))
    labels = {
        "imgname": np.array(names),
        "pose_cam": rng.normal(size=(n, 165)),
        "shape": rng.normal(size=(n, 11)),
        "trans_cam": rng.normal(size=(n, 3)),
        "cam_ext": cam_ext,
        "gender": np.array(["neutral"] * n),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **labels)
    return labels


@pytest.fixture
def release(tmp_path):
    rng = np.random.default_rng(0)
    raw, labels_root = tmp_path / "raw", tmp_path / "labels"
    train_labels, test_labels = labels_root / "all_npz_12_training", labels_root / "all_npz_12_validation"
    labels = {}

    a = raw / SCENE_A
    _write_be_seq(a, ["seq_000000", "seq_000001", "seq_000002", "seq_000003"])
    _write_sequence(a, "seq_000000", 12, rng)
    _write_sequence(a, "seq_000001", 11, rng)
    _write_sequence(a, "seq_000002", 6, rng)
    _write_sequence(a, "seq_000003", 6, rng, camera=False)
    labels[SCENE_A] = _write_labels(
        train_labels / f"{SCENE_A}_6fps.npz",
        {
            "seq_000000/seq_000000_0000.png": 2,
            "seq_000000/seq_000000_0003.png": 1,  # 0003: not a kept render
            "seq_000000/seq_000000_0005.png": 1,
            "seq_000000/seq_000000_0010.png": 1,
            "seq_000001/seq_000001_0000.png": 1,
            "seq_000001/seq_000001_0010.png": 3,  # 0005 unlabelled
            "seq_000003/seq_000003_0000.png": 1,
        },
        rng,
    )

    b = raw / SCENE_B
    _write_be_seq(b, ["seq_000000"])
    _write_sequence(b, "seq_000000", 6, rng)
    (b / "masks" / "seq_000000" / "seq_000000_0005_env.png").unlink()
    labels[SCENE_B] = _write_labels(
        test_labels / f"{SCENE_B}_30fps.npz", {f"seq_000000/seq_000000_{i:04d}.png": 1 for i in range(6)}, rng
    )

    for scene in (HDRI, CLOSEUP):
        _write_be_seq(raw / scene, ["seq_000000"])
        _write_sequence(raw / scene, "seq_000000", 6, rng)
        _write_labels(train_labels / f"{scene}_6fps.npz", {"seq_000000/seq_000000_0000.png": 1}, rng)

    _write_be_seq(raw / NO_LABELS, ["seq_000000"])
    _write_sequence(raw / NO_LABELS, "seq_000000", 6, rng)
    return SimpleNamespace(raw=raw, labels=labels_root, out=tmp_path / "out", label_arrays=labels)


EXPECTED_FRAMES = {
    ("Training", f"{SCENE_A}_seq_000000"): ["seq_000000_0000", "seq_000000_0005", "seq_000000_0010"],
    ("Training", f"{SCENE_A}_seq_000001"): ["seq_000001_0000", "seq_000001_0010"],
    ("Test", f"{SCENE_B}_seq_000000"): ["seq_000000_0000", "seq_000000_0005"],
}
EXPECTED_SKIPS = {
    "hdri_scene": 1,
    "closeup_scene": 1,
    "scene_without_labels": 1,
    "sequence_without_labels": 1,
    "sequence_without_camera_csv": 1,
    "frame_without_labels": 1,
}
SUFFIXES = {"rgb": ".png", "depth": ".npy", "mask": ".png", "cam": ".npz", "smpl": ".npz"}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_layout_and_contents(release):
    summary = bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    assert summary == {
        "sequences_written": 3,
        "frames_written": 7,
        "sequences_already_done": 0,
        "frames_missing_mask": 1,
        "skipped": EXPECTED_SKIPS,
    }

    expected = {"Training", "Test"}
    for (split, name), frames in EXPECTED_FRAMES.items():
        expected |= {f"{split}/{name}"} | {f"{split}/{name}/{sub}" for sub in SUFFIXES}
        expected |= {f"{split}/{name}/{sub}/{f}{ext}" for sub, ext in SUFFIXES.items() for f in frames}
    assert _tree(release.out) == expected

    for (split, name), frames in EXPECTED_FRAMES.items():
        scene, seq = name.rsplit("_seq_", 1)[0], "seq_" + name.rsplit("_seq_", 1)[1]
        src, dst = release.raw / scene, release.out / split / name
        labels = release.label_arrays[scene]
        for f in frames:
            index = int(f[-4:])
            assert (dst / "rgb" / f"{f}.png").read_bytes() == (src / "png" / seq / f"{f}.png").read_bytes()

            depth = np.load(dst / "depth" / f"{f}.npy")
            depth_cm = OpenEXR.File(str(src / "depth" / seq / f"{f}_depth.exr")).parts[0].channels["Depth"].pixels
            assert depth.dtype == np.float32 and depth.shape == (H, W)
            np.testing.assert_allclose(depth, depth_cm / 100.0, rtol=1e-6)

            mask = np.asarray(PIL.Image.open(dst / "mask" / f"{f}.png"))
            env_path = src / "masks" / seq / f"{f}_env.png"
            assert mask.dtype == np.uint8 and mask.shape == (H, W)
            if env_path.exists():
                np.testing.assert_array_equal(mask, 255 - np.asarray(PIL.Image.open(env_path))[..., 0])
            else:
                assert (scene, f) == (SCENE_B, "seq_000000_0005") and not mask.any()

            with np.load(dst / "cam" / f"{f}.npz") as cam:
                assert set(cam.files) == {"intrinsics", "pose"}
                assert cam["intrinsics"].dtype == cam["pose"].dtype == np.float32
                focal = 20 + index  # the camera row of the render's own index, not of the kept-frame index
                np.testing.assert_allclose(
                    cam["intrinsics"],
                    [[focal / 36 * 1280, 0, 640], [0, focal / 20.25 * 720, 360], [0, 0, 1]],
                    rtol=1e-6,
                )
                np.testing.assert_allclose(cam["pose"][3], [0, 0, 0, 1])
                np.testing.assert_allclose(cam["pose"][:3, :3] @ cam["pose"][:3, :3].T, np.eye(3), atol=1e-6)

            rows = np.flatnonzero(labels["imgname"] == f"{seq}/{f}.png")
            with np.load(dst / "smpl" / f"{f}.npz") as smpl:
                got = dict(smpl)
            assert all(v.dtype == np.float32 for v in got.values())
            pose = labels["pose_cam"][rows]
            p = len(rows)
            want = {
                "smplx_root_pose": pose[:, :3],
                "smplx_body_pose": pose[:, 3:66].reshape(p, 21, 3),
                "smplx_jaw_pose": pose[:, 66:69],
                "smplx_leye_pose": pose[:, 69:72],
                "smplx_reye_pose": pose[:, 72:75],
                "smplx_left_hand_pose": pose[:, 75:120].reshape(p, 15, 3),
                "smplx_right_hand_pose": pose[:, 120:].reshape(p, 15, 3),
                "smplx_shape": labels["shape"][rows],
                "smplx_transl": labels["trans_cam"][rows] + labels["cam_ext"][rows, :3, 3],
            }
            assert got.keys() == want.keys()
            for k, v in want.items():
                assert got[k].shape == v.shape, k
                np.testing.assert_allclose(got[k], v, rtol=1e-6, err_msg=k)
    with np.load(release.out / "Training" / f"{SCENE_A}_seq_000001" / "smpl" / "seq_000001_0010.npz") as smpl:
        assert smpl["smplx_body_pose"].shape == (3, 21, 3)


def _assert_follows(arrays, spec, where):
    """arrays has exactly the keys of spec, each of its (dtype, shape)."""
    assert sorted(arrays) == sorted(spec), where
    for k, (dtype, shape) in spec.items():
        assert (arrays[k].dtype, arrays[k].shape) == (dtype, shape), (where, k)


def test_output_follows_the_schema(release):
    """The preprocessing writes the layout of data/schema.py (subfolders; cam and smpl files: keys, dtypes,
    shapes), and the BEDLAM pipeline's readers take it."""
    bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    for (split, name), frames in EXPECTED_FRAMES.items():
        seq = release.out / split / name
        assert sorted(p.name for p in seq.iterdir()) == sorted(SUBFOLDERS)
        for f in frames:
            with np.load(seq / "cam" / f"{f}.npz") as cam:
                _assert_follows(dict(cam), CAMERA_SPEC, f"{name}/cam/{f}")
            with np.load(seq / "smpl" / f"{f}.npz") as smpl:
                labels = dict(smpl)
            people = len(labels["smplx_transl"])
            _assert_follows(labels, label_spec(people), f"{name}/smpl/{f}")
            read = B.read_smpl(seq / "smpl", f)
            assert {k: (v.dtype, v.shape) for k, v in read.items()} == {
                k: (np.float32, (people, *shape)) for k, (_, shape) in SMPL_KEYS.items()
            }
            B.read_camera(seq / "cam" / f"{f}.npz")


@pytest.mark.parametrize("key", sorted(EXPECTED_POSES))
def test_camera_to_world_by_hand(release, key):
    bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    scene, seq, index = key
    rotation, centre = EXPECTED_POSES[key]
    with np.load(release.out / "Training" / f"{scene}_{seq}" / "cam" / f"{seq}_{index:04d}.npz") as cam:
        pose = cam["pose"]
    np.testing.assert_allclose(pose[:3, :3], rotation, atol=1e-6)
    np.testing.assert_allclose(pose[:3, 3], centre, atol=1e-6)


def test_skips_are_logged(release, caplog):
    with caplog.at_level("INFO", logger=bp.__name__):
        bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    text = caplog.text
    assert f"{SCENE_A}/seq_000002: no labels" in text
    assert f"{SCENE_A}/seq_000003: no camera file" in text
    assert f"skipping {NO_LABELS}: no {NO_LABELS}_6fps.npz" in text
    assert f"skipping {HDRI}: HDRI scene" in text and f"skipping {CLOSEUP}: closeup scene" in text
    assert f"{SCENE_B}_seq_000000: 1 frame(s) without an env mask" in text


def test_rerun_is_idempotent_and_limit(release):
    first = bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False, limit_sequences=1)
    assert (first["sequences_written"], first["frames_written"]) == (1, 3)
    done = release.out / "Training" / f"{SCENE_A}_seq_000000"
    stamp = {p: p.stat().st_mtime_ns for p in done.rglob("*")}

    second = bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    assert (second["sequences_written"], second["frames_written"], second["sequences_already_done"]) == (2, 4, 1)
    third = bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    assert (third["sequences_written"], third["frames_written"], third["sequences_already_done"]) == (0, 0, 3)
    assert {p: p.stat().st_mtime_ns for p in done.rglob("*")} == stamp


def test_failure_leaves_no_partial_sequence(release):
    bad = release.raw / SCENE_A / "depth" / "seq_000001" / "seq_000001_0010_depth.exr"
    good = bad.read_bytes()
    bad.write_bytes(b"not an exr")
    with pytest.raises(bp.BedlamError, match="seq_000001_0010_depth.exr"):
        bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    # seq_000000 came first and is complete; seq_000001 (frame 0000 already written) left nothing behind.
    assert sorted(os.listdir(release.out / "Training")) == [f"{SCENE_A}_seq_000000"]
    assert len(list((release.out / "Training" / f"{SCENE_A}_seq_000000" / "rgb").iterdir())) == 3

    bad.write_bytes(good)
    summary = bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    assert (summary["sequences_written"], summary["sequences_already_done"]) == (2, 1)


def test_workers_give_the_same_output(release, tmp_path):
    serial = bp.preprocess_bedlam(release.raw, release.labels, tmp_path / "serial", progress=False)
    parallel = bp.preprocess_bedlam(release.raw, release.labels, tmp_path / "parallel", workers=2, progress=False)
    assert serial == parallel
    files = _tree(tmp_path / "serial")
    assert files == _tree(tmp_path / "parallel")
    for rel in sorted(files):
        a, b = tmp_path / "serial" / rel, tmp_path / "parallel" / rel
        if a.suffix == ".npz":  # zip members carry a timestamp: compare the arrays
            with np.load(a) as za, np.load(b) as zb:
                assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
        elif a.is_file():
            assert a.read_bytes() == b.read_bytes(), rel


def _drop_label_key(release):
    path = release.labels / "all_npz_12_training" / f"{SCENE_A}_6fps.npz"
    arrays = {k: v for k, v in release.label_arrays[SCENE_A].items() if k != "trans_cam"}
    np.savez(path, **arrays)
    return [str(path), "trans_cam"]


def _bad_camera_row(release):
    path = release.raw / SCENE_A / "ground_truth" / "camera" / "seq_000000_camera.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",22,", ",oops,")  # render 2 (line 4): the whole file is checked
    path.write_text("\n".join(lines) + "\n")
    return [str(path), "line 4", "focal_length", "oops"]


def _no_comment_column(release):
    path = release.raw / SCENE_A / "be_seq.csv"
    path.write_text(path.read_text().replace(",Comment", ",Note"))
    return [str(path), "Comment"]


def _truncated_png(release):
    path = release.raw / SCENE_A / "png" / "seq_000000" / "seq_000000_0005.png"
    path.write_bytes(path.read_bytes()[:40])
    return [str(path)]


def _missing_png_folder(release):
    path = release.raw / SCENE_A / "png" / "seq_000001"
    for p in path.iterdir():
        p.unlink()
    path.rmdir()
    return [str(path)]


@pytest.mark.parametrize(
    "corrupt", [_drop_label_key, _bad_camera_row, _no_comment_column, _truncated_png, _missing_png_folder]
)
def test_bad_input_names_the_file(release, corrupt):
    needles = corrupt(release)
    with pytest.raises(bp.BedlamError) as e:
        bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    for needle in needles:
        assert needle in str(e.value)
    if release.out.exists():
        assert not list(release.out.rglob(".*")), "a partial folder was left behind"


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        bp.preprocess_bedlam(tmp_path / "nowhere", tmp_path, tmp_path / "out", progress=False)


def test_main(release, capsys):
    assert (
        bp.main(
            [
                "--raw",
                str(release.raw),
                "--labels",
                str(release.labels),
                "--out",
                str(release.out),
                "--workers",
                "1",
                "--limit",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert "wrote 2 sequences (5 frames)" in capsys.readouterr().out
    assert sorted(os.listdir(release.out / "Training")) == [f"{SCENE_A}_seq_000000", f"{SCENE_A}_seq_000001"]


def test_masks_read_as_opencv_greyscale(tmp_path):
    """8-bit grey as is, RGB through the luma, 16-bit by its high byte (OpenCV's 8-bit read), not
    clipped at 255 as PIL's own conversion would."""
    grey = np.array([[0, 7, 128, 255]], np.uint8)
    PIL.Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(bp._read_gray(tmp_path / "g.png"), grey)
    PIL.Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(bp._read_gray(tmp_path / "rgb.png"), grey)
    deep = np.array([[0, 255, 256, 40000, 65535]], np.uint16)
    PIL.Image.fromarray(deep).save(tmp_path / "d.png")
    assert PIL.Image.open(tmp_path / "d.png").mode.startswith("I")
    np.testing.assert_array_equal(bp._read_gray(tmp_path / "d.png"), [[0, 0, 1, 156, 255]])


def test_output_that_would_touch_the_inputs_is_refused(release, tmp_path):
    before = _tree(release.raw)
    for out in (release.raw, release.raw / "out", release.labels):
        with pytest.raises(bp.BedlamError, match="is or lies in the input folder"):
            bp.preprocess_bedlam(release.raw, release.labels, out, progress=False)
    with pytest.raises(bp.BedlamError, match="Training/Test folders would hold"):
        bp.check_output_root(tmp_path, tmp_path / "Training" / "raw", release.labels)
    (tmp_path / "file").write_text("")
    with pytest.raises(bp.BedlamError, match="file: exists and is not a folder"):
        bp.preprocess_bedlam(release.raw, release.labels, tmp_path / "file", progress=False)
    assert _tree(release.raw) == before


def test_leftovers_of_a_killed_run_are_removed_only_if_ours(release):
    from human3r_jax import outputs

    split = release.out / "Training"
    ours = split / f".{SCENE_A}_seq_000000.partial-killed"
    ours.mkdir(parents=True)
    outputs.mark(ours, "bedlam-sequence")
    (ours / "rgb").mkdir()
    bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False, limit_sequences=1)
    assert not ours.exists() and (split / f"{SCENE_A}_seq_000000").is_dir()
    theirs = split / f".{SCENE_A}_seq_000001.partial-mine"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(outputs.OutputError, match="partial-mine"):
        bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False)
    assert (theirs / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_sequences_follow_the_umask(release, umask):
    old = os.umask(umask)
    try:
        bp.preprocess_bedlam(release.raw, release.labels, release.out, progress=False, limit_sequences=1)
    finally:
        os.umask(old)
    seq = release.out / "Training" / f"{SCENE_A}_seq_000000"
    assert seq.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (seq / "rgb").stat().st_mode & 0o777 == 0o777 & ~umask
    assert not (seq / ".human3r-jax").exists()  # the finished layout is the official one
