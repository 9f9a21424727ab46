"""The BEDLAM training pipeline on a tiny fake preprocessed dataset (80×60 frames written here)."""

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from human3r_jax.data import bedlam as B

W0, H0 = 80, 60
K0 = np.array([[50.0, 0, 41.3], [0, 50.0, 29.6], [0, 0, 1]])
CROWDED = ("scene_a_seq_000000", 5)  # the frame with more people than slots
RES = [(32, 24), (24, 32)]


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _people(rng, n):
    z = rng.uniform(0.5, 15.0, n)
    if n >= 3:
        z[:2] = [0.01, -1.0]  # behind the camera or on its plane: dropped
    return {
        "smplx_root_pose": rng.normal(size=(n, 3)),
        "smplx_body_pose": rng.normal(size=(n, 21, 3)),
        "smplx_jaw_pose": rng.normal(size=(n, 3)),
        "smplx_leye_pose": rng.normal(size=(n, 3)),
        "smplx_reye_pose": rng.normal(size=(n, 3)),
        "smplx_left_hand_pose": rng.normal(size=(n, 15, 3)),
        "smplx_right_hand_pose": rng.normal(size=(n, 15, 3)),
        "smplx_shape": rng.normal(size=(n, 11)),
        "smplx_transl": np.c_[rng.normal(size=(n, 2)), z],
    }


def _as_pickle_people(people):
    """The official per-person dicts (root/jaw/eye poses shaped (1, 3), a gender string)."""
    n = len(people["smplx_transl"])
    out = []
    for i in range(n):
        d = {k: v[i].reshape(1, 3) if v[i].shape == (3,) and k != "smplx_transl" else v[i] for k, v in people.items()}
        d["smplx_gender"] = "neutral"
        out.append(d)
    return out


def write_sequence(seq_dir, num_frames, rng, *, pickle_labels=False, crowded=None):
    for sub in B.SUBFOLDERS:
        (seq_dir / sub).mkdir(parents=True)
    for f in range(num_frames):
        name = f"{f:05d}"
        PIL.Image.fromarray(rng.integers(0, 256, (H0, W0, 3), dtype=np.uint8)).save(seq_dir / "rgb" / f"{name}.png")
        mask = np.zeros((H0, W0), np.uint8)
        mask[rng.integers(0, H0 - 10) :, rng.integers(0, W0 - 10) :][:10, :10] = 255
        PIL.Image.fromarray(mask).save(seq_dir / "mask" / f"{name}.png")
        depth = rng.uniform(1, 20, (H0, W0)).astype(np.float32)
        depth[:, :10] = 500.0  # sky
        depth[30, 40] = np.nan
        np.save(seq_dir / "depth" / f"{name}.npy", depth)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = _rotation(rng), rng.normal(size=3)
        np.savez(seq_dir / "cam" / f"{name}.npz", intrinsics=K0, pose=pose)
        people = _people(rng, 13 if f == crowded else int(rng.integers(0, 5)))
        if pickle_labels:
            with open(seq_dir / "smpl" / f"{name}.pkl", "wb") as fh:
                pickle.dump(_as_pickle_people(people), fh, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            np.savez(seq_dir / "smpl" / f"{name}.npz", **people)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bedlam")
    train = root / "Training"
    rng = np.random.default_rng(0)
    write_sequence(train / "scene_a_seq_000000", 10, rng, crowded=CROWDED[1])
    write_sequence(train / "scene_b_seq_000001", 7, rng, pickle_labels=True)
    write_sequence(train / "scene_c_seq_000002", 3, rng)
    write_sequence(train / "scene_d_seq_000004", 0, rng)  # no frames: skipped
    # excluded by the official lists before any check: these need no content
    for name in (
        "20221010_3-10_500_batch01hand_zoom_suburb_d_seq_000042",
        "20221010_3_1000_batch01hand_x_seq_000001",
        "scene_closeup_seq_000003",
    ):
        (train / name).mkdir()
    return root


@pytest.fixture(scope="module")
def index(root):
    return B.BedlamIndex(root, "Training")


def _expected_humans(seq, frame, max_humans=10):
    people = B.read_smpl(seq.path / "smpl", frame)
    z = people["smpl_transl"][:, 2]
    order = [i for i in np.argsort(z, kind="stable") if z[i] > 0.01][:max_humans]
    return {k: people[k][order] for k in B.SMPL_KEYS}


# ---------------------------------------------------------------- index


def test_index_exclusions_and_skip(root, caplog):
    with caplog.at_level(logging.WARNING, logger=B.__name__):
        idx = B.BedlamIndex(root, "train")
    assert [s.name for s in idx.sequences] == ["scene_a_seq_000000", "scene_b_seq_000001", "scene_c_seq_000002"]
    assert "scene_d_seq_000004" in caplog.text and "skipping" in caplog.text
    assert idx.min_frames == 3 and idx.num_starts == 8 + 5 + 1
    assert idx.locate(0) == (0, 0) and idx.locate(7) == (0, 7) and idx.locate(8) == (1, 0) and idx.locate(13) == (2, 0)
    assert len(B.INVALID_SEQUENCES) == 141
    # the official test set (no allow_repeat): 4 frames needed, so scene_c (3 frames) is skipped, and
    # every start has 3 frames after it, so no sample repeats a frame
    strict = B.BedlamIndex(root, "train", allow_repeat=False)
    assert [s.name for s in strict.sequences] == ["scene_a_seq_000000", "scene_b_seq_000001"]
    assert strict.min_frames == 4 and strict.num_starts == 7 + 4
    rng = np.random.default_rng(0)
    for k in range(strict.num_starts):
        i, start = strict.locate(k)
        views = B.sample_frame_positions(len(strict.sequences[i].frames), start, 4, rng)
        assert len(set(views)) == 4 and views[0] == start


def test_exclusion_list_is_package_data():
    """The official exclusion list ships as a data file of the package, which pyproject installs."""
    import tomllib
    from importlib.resources import files

    text = files("human3r_jax.data.bedlam").joinpath("excluded_sequences.txt").read_text()
    names = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert text.startswith("#") and names == sorted(B.INVALID_SEQUENCES)
    assert all(B.is_excluded(n) for n in names) and not B.is_excluded("20221010_3-10_500_batch01hand_x_seq_000000")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "human3r_jax.data.bedlam" in pyproject["packages"]
    assert pyproject["package-data"]["human3r_jax.data.bedlam"] == ["excluded_sequences.txt"]


def test_index_errors(tmp_path, root):
    with pytest.raises(B.DataError, match="does not exist"):
        B.BedlamIndex(tmp_path / "nope")
    with pytest.raises(B.DataError, match="split folder missing"):
        B.BedlamIndex(tmp_path)
    with pytest.raises(B.DataError, match=r"missing subfolder\(s\) .*smpl"):
        B.BedlamIndex(root, skip_invalid=False)  # the excluded folders are empty
    bad = tmp_path / "Training" / "s_seq_0"
    for sub in ("rgb", "mask", "cam", "smpl"):
        (bad / sub).mkdir(parents=True)
    with pytest.raises(B.DataError, match=r"s_seq_0: missing subfolder\(s\) depth"):
        B.BedlamIndex(tmp_path)
    (bad / "depth").mkdir()
    with pytest.raises(B.DataError, match="no usable sequence"):
        B.BedlamIndex(tmp_path)


# ---------------------------------------------------------------- view sampling


def test_stride_rule():
    def strides(n, start, draws=300):
        out = set()
        for i in range(draws):
            pos = B.sample_frame_positions(n, start, 4, np.random.default_rng(i))
            s = pos[1] - pos[0]
            assert pos == [start + k * s for k in range(4)]
            out.add(s)
        return out

    assert strides(20, 0) == {1, 2, 3, 4}  # capped at MAX_INTERVAL
    assert strides(10, 0) == {1, 2, 3}  # 9 frames after the start: s ≤ 9 // 3
    assert strides(10, 2) == {1, 2}
    assert strides(10, 5) == {1} and strides(10, 6) == {1}
    tails = set()
    for i in range(300):  # 2 frames after the start: two frames a, a + s repeated
        a, b, a2, b2 = B.sample_frame_positions(10, 7, 4, np.random.default_rng(i))
        assert (a2, b2) == (a, b) and 0 <= a <= 7 and 1 <= b - a <= min(4, 9 - a)
        tails.add((a, b - a))
    assert len(tails) > 10


def test_view_input_masks():
    rng = np.random.default_rng(0)
    assert all(B.view_input_masks(0, rng) == (True, False) for _ in range(50))
    draws = [B.view_input_masks(1, rng) for _ in range(4000)]
    assert set(draws) == {(True, False), (True, True)}
    assert abs(np.mean([r for _, r in draws]) - 0.15) < 0.03


# ---------------------------------------------------------------- crop / resize


def test_crop_keeps_projection():
    """80×60, principal point (41.3, 29.6) → window x ∈ [2, 80), y ∈ [0, 60) (78×60, pp (39.3, 29.6));
    target 32×24 enlarged by 4 → s = 28/60 + 1e-8, resized to 36×28 (sub-pixel offsets 0.5·(78s − 36),
    0.5·(60s − 28)), centred 32×24 window at (2, 2)."""
    s = 28 / 60 + 1e-8
    ox, oy = 0.5 * (78 * s - 36), 0.5 * (60 * s - 28)

    def expected(u, v):  # original pixel → output pixel (pixel centres at integers)
        return (u - 2 + 0.5) * s - ox - 0.5 - 2, (v - 0 + 0.5) * s - oy - 0.5 - 2

    X = np.array([0.3, -0.2, 2.0])
    u, v = (K0 @ X / X[2])[:2]  # (48.8, 24.6)
    mask = np.zeros((H0, W0), np.uint8)
    mask[22:28, 46:52] = 255
    yy, xx = np.mgrid[:H0, :W0]
    depth = (xx + 100.0 * yy).astype(np.float32)  # encodes the source pixel
    rgb = PIL.Image.fromarray(np.zeros((H0, W0, 3), np.uint8))
    rgb2, depth2, mask2, K = B.crop_resize(rgb, depth, PIL.Image.fromarray(mask), K0, (32, 24), enlarge=4)
    assert rgb2.size == mask2.size == (32, 24) and depth2.shape == (24, 32)

    u2, v2 = (K @ X / X[2])[:2]
    np.testing.assert_allclose((u2, v2), expected(u, v), atol=1e-9)
    np.testing.assert_allclose(K[:2, 2], expected(41.3, 29.6), atol=1e-9)
    np.testing.assert_allclose([K[0, 0], K[1, 1]], [50 * s, 50 * s], atol=1e-9)
    pu, pv = int(round(u2)), int(round(v2))
    assert np.asarray(mask2)[pv, pu] == 255
    # depth is resized OpenCV-nearest (source floor(i · in/out), no half-pixel shift) as officially:
    # the sample sits within one output pixel (≈ 2.2 source pixels) of the projection, biased left/up
    src_u, src_v = depth2[pv, pu] % 100, depth2[pv, pu] // 100
    assert (src_u, src_v) == (2 + np.floor((pu + 2) * 78 / 36), np.floor((pv + 2) * 60 / 28))
    assert abs(src_u - u) <= 2.2 and abs(src_v - v) <= 2.2


def test_read_depth_invalid(tmp_path):
    d = np.full((4, 5), 3.0, np.float32)
    d[0, 0], d[1, 1], d[2, 2], d[3, 3] = np.nan, np.inf, 200.5, 200.0
    np.save(tmp_path / "d.npy", d)
    got = B.read_depth(tmp_path / "d.npy", (4, 5))
    assert got.dtype == np.float32 and got[0, 0] == got[1, 1] == got[2, 2] == 0 and got[3, 3] == 200.0
    assert (got[got != 200.0] <= 3).all() and (got > 0).sum() == 17


def test_bad_principal_point():
    K = K0.copy()
    K[0, 2] = 5.0
    img = PIL.Image.new("RGB", (W0, H0))
    with pytest.raises(B.DataError, match="principal point"):
        B.crop_resize(img, np.ones((H0, W0), np.float32), PIL.Image.new("L", (W0, H0)), K, (32, 24))


# ---------------------------------------------------------------- samples and batches


def _check_schema(batch, bsz, res, num_views=4, max_humans=10):
    w, h = res
    spec = B.batch_spec(bsz, num_views, max_humans)
    assert set(batch) == set(spec)
    for k, (dtype, shape) in spec.items():
        want = tuple(h if d is None and i == 2 else w if d is None else d for i, d in enumerate(shape))
        assert np.asarray(batch[k]).dtype == dtype, k
        assert np.shape(batch[k]) == want, (k, np.shape(batch[k]), want)


@pytest.mark.parametrize("res", RES)
def test_pipeline_schema(index, res):
    batch = next(B.iterate(index, batch_size=2, seed=0, resolutions=[res], num_parallel=2))
    _check_schema(batch, 2, res)
    assert np.abs(batch["img"]).max() <= 1.0 and batch["img"].std() > 0.1
    assert set(np.unique(batch["human_mask"])) <= {0.0, 1.0}
    assert batch["img_mask"].all() and not batch["ray_mask"][:, 0].any()
    assert batch["step"] == 0


def test_tf_sees_no_gpu(index):
    B.make_dataset(index, batch_size=1, seed=0)
    import tensorflow as tf

    assert tf.config.get_visible_devices("GPU") == []


def test_determinism_and_resume(index):
    kw = {"batch_size": 2, "resolutions": RES, "aug_crop": 16}
    a = B.make_batch(index, seed=3, step=5, **kw)
    b = B.make_batch(index, seed=3, step=5, **kw)
    c = B.make_batch(index, seed=4, step=5, **kw)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(a[k].shape != c[k].shape or not np.array_equal(a[k], c[k]) for k in ("img", "frame_ids", "seq_index"))

    fresh = B.iterate(index, seed=3, num_parallel=3, **kw)
    batches = [next(fresh) for _ in range(4)]
    assert [int(x["step"]) for x in batches] == [0, 1, 2, 3]
    resumed = next(B.iterate(index, seed=3, start_step=3, **kw))
    for k in resumed:
        np.testing.assert_array_equal(resumed[k], batches[3][k], err_msg=k)
    pure = B.make_batch(index, seed=3, step=3, **kw)
    for k in pure:  # the pipeline is the pure function of (seed, step)
        np.testing.assert_array_equal(pure[k], batches[3][k], err_msg=k)


def test_resolution_weights():
    draws = [B.batch_resolution(0, step, B.OFFICIAL_RESOLUTIONS) for step in range(3000)]
    share = np.mean([r in B.OFFICIAL_RESOLUTIONS[:5] for r in draws])
    assert abs(share - 2 / 3) < 0.04 and set(draws) == set(B.OFFICIAL_RESOLUTIONS)


def test_sample_contents(index):
    """Frames equally spaced (or the tail pattern), humans sorted/filtered/capped, depth validity, ray map."""
    seen_crowded = False
    for i in range(40):
        s = B.load_sample(index, np.random.default_rng([7, i]), (32, 24))
        seq = index.sequences[int(s["seq_index"])]
        ids = s["frame_ids"].tolist()
        stride = ids[1] - ids[0]
        assert 1 <= stride <= 4 and max(ids) < len(seq.frames)
        if ids[2] == ids[0]:  # a start with 2 frames after it: two frames repeated
            assert ids[2:] == ids[:2]
        else:
            assert ids == [ids[0] + k * stride for k in range(4)]

        for v, f in enumerate(ids):
            want = _expected_humans(seq, seq.frames[f])
            n = len(want["smpl_transl"])
            assert s["smpl_mask"][v].tolist() == [True] * n + [False] * (10 - n)
            for k in B.SMPL_KEYS:
                np.testing.assert_array_equal(s[k][v, :n], want[k])
                assert not s[k][v, n:].any()
            z = s["smpl_transl"][v, :n, 2]
            assert (z > 0.01).all() and (np.diff(z) >= 0).all()
            if (seq.name, f) == CROWDED:
                seen_crowded = True
                assert n == 10  # 13 people, 2 behind the camera, the farthest one beyond the slots

        depth, valid = s["depth"], s["valid"]
        assert np.isfinite(depth).all() and depth.max() <= 200 and (valid == (depth > 0)).all()
        assert not valid.all()  # the 500 m sky columns

        K, c2w, rays = s["K"].astype(np.float64), s["c2w"].astype(np.float64), s["ray_map"]
        u, v = np.meshgrid(np.arange(32), np.arange(24))
        pix = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
        for view in range(4):
            T = np.linalg.inv(c2w[0]) @ c2w[view]
            d = pix @ np.linalg.inv(K[view]).T
            if view == 0:  # the camera's own rays
                np.testing.assert_allclose(rays[0, ..., :3], 0, atol=1e-5)
            d = d @ T[:3, :3].T + T[:3, 3]  # official: direction mapped as a point
            np.testing.assert_allclose(rays[view, ..., 3:], d / np.linalg.norm(d, axis=-1, keepdims=True), atol=2e-5)
            np.testing.assert_allclose(rays[view, ..., :3], np.broadcast_to(T[:3, 3], (24, 32, 3)), atol=2e-5)
    assert seen_crowded


def test_jitter_shared_across_views(tmp_path):
    """Tail sample of a 3-frame sequence: views [0, s, 0, s]; without crop enlargement, equal frames
    must give equal jittered images."""
    write_sequence(tmp_path / "Training" / "only_seq_0", 3, np.random.default_rng(1))
    idx = B.BedlamIndex(tmp_path)
    for i in range(5):
        s = B.load_sample(idx, np.random.default_rng(i), (24, 16), aug_crop=0)
        plain = B.load_sample(idx, np.random.default_rng(i), (24, 16), aug_crop=0, jitter=False)
        np.testing.assert_array_equal(s["img"][0], s["img"][2])
        np.testing.assert_array_equal(s["img"][1], s["img"][3])
        assert not np.array_equal(s["img"], plain["img"])
        np.testing.assert_array_equal(s["depth"], plain["depth"])


# ---------------------------------------------------------------- bad files


@pytest.fixture
def one_seq(tmp_path):
    """A dataset whose every sample uses frame 00000 (a 3-frame sequence's only start)."""
    seq = tmp_path / "Training" / "only_seq_0"
    write_sequence(seq, 3, np.random.default_rng(2))
    return tmp_path, seq


def _load(root):
    return B.load_sample(B.BedlamIndex(root), np.random.default_rng(0), (24, 16))


def test_unreadable_png(one_seq):
    root, seq = one_seq
    (seq / "rgb" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(B.DataError, match=r"rgb/00000\.png: cannot read"):
        _load(root)
    with pytest.raises(B.DataError, match=r"rgb/00000\.png: cannot read"):  # through tf.data too
        next(B.iterate(B.BedlamIndex(root), batch_size=1, seed=0, resolutions=[(24, 16)]))


def test_depth_wrong_shape(one_seq):
    root, seq = one_seq
    np.save(seq / "depth" / "00000.npy", np.ones((10, 10), np.float32))
    with pytest.raises(B.DataError, match=r"depth/00000\.npy: depth map is float32 \(10, 10\)"):
        _load(root)


def test_npz_missing_key(one_seq):
    root, seq = one_seq
    np.savez(seq / "cam" / "00000.npz", intrinsics=K0)
    with pytest.raises(B.DataError, match=r"cam/00000\.npz: missing key 'pose'"):
        _load(root)


def test_smpl_npz_missing_key(one_seq):
    root, seq = one_seq
    people = _people(np.random.default_rng(0), 2)
    del people["smplx_shape"]
    np.savez(seq / "smpl" / "00000.npz", **people)
    with pytest.raises(B.DataError, match=r"smpl/00000\.npz: missing key 'smplx_shape'"):
        _load(root)


@pytest.mark.parametrize("protocol", [2, 5])
def test_official_pickle_loads(tmp_path, protocol):
    people = _people(np.random.default_rng(0), 3)
    with open(tmp_path / "f.pkl", "wb") as fh:
        pickle.dump(_as_pickle_people(people), fh, protocol=protocol)
    got = B.read_smpl(tmp_path, "f")
    for k, (fk, shape) in B.SMPL_KEYS.items():
        np.testing.assert_array_equal(got[k], people[fk].reshape(3, *shape).astype(np.float32))
    with open(tmp_path / "g.pkl", "wb") as fh:
        pickle.dump([], fh)
    assert B.read_smpl(tmp_path, "g")["smpl_transl"].shape == (0, 3)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "f.pkl", "wb") as fh:
        pickle.dump([{"smplx_transl": _Evil(marker)}], fh)
    with pytest.raises(B.DataError, match=r"f\.pkl: .*refusing to load (posix|os|nt)\.system"):
        B.read_smpl(tmp_path, "f")
    assert not marker.exists()
    with open(tmp_path / "g.pkl", "wb") as fh:  # an allowed module, a forbidden name
        fh.write(b"cnumpy\nload\n(S'x'\ntR.")
    with pytest.raises(B.DataError, match="refusing to load numpy.load"):
        B.read_smpl(tmp_path, "g")


def test_exit_with_batches_in_flight(index):
    """A live iterator whose batches are still being built when Python exits must not hang it."""
    code = (
        f"import time; from human3r_jax.data.bedlam import pipeline as B; build = B.make_batch\n"
        f"B.make_batch = lambda *a, **k: (time.sleep(0.3), build(*a, **k))[1]\n"
        f"it = B.iterate(B.BedlamIndex({str(index.root)!r}), batch_size=1, seed=0, resolutions=[(24, 16)])\n"
        f"next(it); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------- TensorFlow optional


def test_numpy_part_without_tensorflow(index, monkeypatch):
    code = (
        "import sys; sys.modules['tensorflow'] = None; import human3r_jax.data.bedlam as b; "
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"pip install human3r-jax\[train\]"):
        B.make_dataset(index, batch_size=1, seed=0)
