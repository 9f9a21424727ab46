"""The synthetic BEDLAM-layout dataset (human3r_jax.data.synthetic): files, determinism, and that
its depth, masks, cameras and SMPL-X labels describe one consistent static world."""

from __future__ import annotations

import filecmp
from pathlib import Path

import jax
import numpy as np
import PIL.Image
import pytest

from human3r_jax.data import bedlam as B
from human3r_jax.data import synthetic as syn
from human3r_jax.data.schema import CAMERA_SPEC, SUBFOLDERS, batch_spec, label_spec
from human3r_jax.models import smplx as S

W, H = 96, 64
SUBDIRS = {"rgb": ".png", "depth": ".npy", "mask": ".png", "cam": ".npz", "smpl": ".npz"}
LABEL_SHAPES = {
    "smplx_root_pose": (3,),
    "smplx_body_pose": (21, 3),
    "smplx_jaw_pose": (3,),
    "smplx_leye_pose": (3,),
    "smplx_reye_pose": (3,),
    "smplx_left_hand_pose": (15, 3),
    "smplx_right_hand_pose": (15, 3),
    "smplx_shape": (11,),
    "smplx_transl": (3,),
}


@pytest.fixture(scope="module")
def dataset(smplx_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, syn.make_synthetic_bedlam(root, smplx_root, seed=0)


@pytest.fixture(scope="module")
def model(smplx_root):
    return S.load_smplx(smplx_root, num_betas=11)


def _frames(info):
    """(sequence dir, frame name, visible person ids) for every frame."""
    return [(Path(s["dir"]), f, ids) for s in info["sequences"] for f, ids in zip(s["frames"], s["people"])]


def _rodrigues(v):
    """[..., 3] axis-angle -> [..., 3, 3], written independently of the generator's helper."""
    v = np.asarray(v, np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    k = v / np.maximum(theta[..., 0], 1e-12)
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    outer = k[..., :, None] * k[..., None, :]
    return np.cos(theta) * np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * outer


def _aa55(labels):
    """[P, 55, 3] axis-angle in SMPL-X joint order from a frame's labels."""
    return np.concatenate(
        [
            labels["smplx_root_pose"][:, None],
            labels["smplx_body_pose"],
            labels["smplx_jaw_pose"][:, None],
            labels["smplx_leye_pose"][:, None],
            labels["smplx_reye_pose"][:, None],
            labels["smplx_left_hand_pose"],
            labels["smplx_right_hand_pose"],
        ],
        axis=1,
    )


@pytest.fixture(scope="module")
def camera_vertices(dataset, model):
    """{(sequence dir, frame): [P, 10475, 3]} camera-frame vertices of the labelled people by our
    SMPL-X, all people of the dataset in one batch (one compile, one call)."""
    _, info = dataset
    labels = {(seq, name): _load(seq, name)[1] for seq, name, _ in _frames(info)}
    stacked = {k: np.concatenate([v[k] for v in labels.values()]) for k in LABEL_SHAPES}
    aa = _aa55(stacked)
    out = jax.jit(S.smplx_forward)(
        model, stacked["smplx_shape"], np.zeros((len(aa), 10), np.float32), _rodrigues(aa).astype(np.float32)
    )
    verts = np.asarray(out.vertices, np.float64) + stacked["smplx_transl"][:, None]
    split = np.cumsum([len(v["smplx_transl"]) for v in labels.values()])[:-1]
    return dict(zip(labels, np.split(verts, split)))


def _load(seq, name):
    cam, smpl = np.load(seq / "cam" / f"{name}.npz"), np.load(seq / "smpl" / f"{name}.npz")
    return (
        {k: cam[k] for k in cam.files},
        {k: smpl[k] for k in smpl.files},
        np.load(seq / "depth" / f"{name}.npy"),
        np.asarray(PIL.Image.open(seq / "mask" / f"{name}.png")),
    )


def test_files_dtypes_and_shapes(dataset):
    root, info = dataset
    assert [s["split"] for s in info["sequences"]] == ["Training"] * 3 + ["Test"]
    for s in info["sequences"]:
        seq = Path(s["dir"])
        assert seq.parent == root / s["split"]
        assert sorted(p.name for p in seq.iterdir()) == sorted(SUBDIRS)
        for sub, ext in SUBDIRS.items():
            assert sorted(p.name for p in (seq / sub).iterdir()) == [f + ext for f in s["frames"]]
    for seq, name, ids in _frames(info):
        rgb = PIL.Image.open(seq / "rgb" / f"{name}.png")
        assert rgb.mode == "RGB" and rgb.size == (W, H)
        assert np.asarray(rgb).std() > 10  # textured, not constant
        mask_img = PIL.Image.open(seq / "mask" / f"{name}.png")
        assert mask_img.mode == "L"
        cam, smpl, depth, mask = _load(seq, name)
        assert set(np.unique(mask)) <= {0, 255}
        assert depth.dtype == np.float32 and depth.shape == (H, W)
        assert sorted(cam) == ["intrinsics", "pose"]
        assert cam["intrinsics"].dtype == cam["pose"].dtype == np.float32
        assert cam["intrinsics"].shape == (3, 3) and cam["pose"].shape == (4, 4)
        np.testing.assert_allclose(cam["intrinsics"], info["intrinsics"])
        R = cam["pose"][:3, :3].astype(np.float64)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        np.testing.assert_array_equal(cam["pose"][3], [0, 0, 0, 1])
        assert sorted(smpl) == sorted(LABEL_SHAPES)
        for k, shape in LABEL_SHAPES.items():
            assert smpl[k].dtype == np.float32 and smpl[k].shape == (len(ids),) + shape, k
        assert (mask > 0).any() == bool(ids)
    # both kinds of invalid depth occur: dropout zeros and far sky
    depths = np.stack([np.load(seq / "depth" / f"{name}.npy") for seq, name, _ in _frames(info)])
    assert (depths == 0).any() and (depths > 200).any()


def _assert_follows(arrays, spec, where):
    """arrays has exactly the keys of spec, each of its (dtype, shape)."""
    assert sorted(arrays) == sorted(spec), where
    for k, (dtype, shape) in spec.items():
        assert (np.asarray(arrays[k]).dtype, np.shape(arrays[k])) == (dtype, shape), (where, k)


def test_files_follow_the_schema(dataset):
    """The synthetic dataset is the layout of data/schema.py: subfolders; cam and smpl files (keys, dtypes,
    shapes)."""
    _, info = dataset
    for s in info["sequences"]:
        assert sorted(p.name for p in Path(s["dir"]).iterdir()) == sorted(SUBFOLDERS)
    for seq, name, ids in _frames(info):
        cam, smpl, _, _ = _load(seq, name)
        _assert_follows(cam, CAMERA_SPEC, f"{seq.name}/cam/{name}")
        _assert_follows(smpl, label_spec(len(ids)), f"{seq.name}/smpl/{name}")


def test_pipeline_batch_follows_the_schema(dataset):
    """The BEDLAM pipeline (tf.data) reads the synthetic dataset into batches of schema.batch_spec."""
    root, _ = dataset
    index = B.BedlamIndex(root, "Training")
    batches = B.iterate(index, batch_size=2, seed=0, resolutions=[(64, 48)], num_parallel=1)
    batch = next(batches)
    batches.close()
    spec = batch_spec(2, index.num_views)
    hw = {2: 48, 3: 64}  # the None axes of the spec: H, W
    _assert_follows(
        batch,
        {
            k: (dtype, tuple(hw[i] if d is None else d for i, d in enumerate(shape)))
            for k, (dtype, shape) in spec.items()
        },
        "batch",
    )
    assert batch["smpl_mask"].any()  # the labels reached the slots


def test_people_counts(dataset):
    _, info = dataset
    counts = [len(ids) for *_, ids in _frames(info)]
    assert 0 in counts and max(counts) >= 2


def test_people_at_different_depths(dataset):
    _, info = dataset
    for seq, name, ids in _frames(info):
        if len(ids) >= 2:
            z = np.sort(_load(seq, name)[1]["smplx_transl"][:, 2])
            assert np.diff(z).min() > 0.3


def test_deterministic(dataset, smplx_root, tmp_path):
    root, _ = dataset
    syn.make_synthetic_bedlam(tmp_path / "again", smplx_root, seed=0)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file()) == files
    _, mismatch, errors = filecmp.cmpfiles(root, tmp_path / "again", files, shallow=False)
    assert not mismatch and not errors  # the same seed: byte-identical
    # another seed, another world (small runs: sequence 0 with people in both)
    small = {"n_train": 1, "n_test": 0, "frames": 2}
    syn.make_synthetic_bedlam(tmp_path / "a", smplx_root, seed=0, **small)
    syn.make_synthetic_bedlam(tmp_path / "b", smplx_root, seed=1, **small)
    for sub, ext in SUBDIRS.items():
        rel = f"Training/synth00_seq_000000/{sub}/000000{ext}"
        assert not filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel


def test_people_static_in_world(dataset, camera_vertices):
    _, info = dataset
    checked = 0
    for s in info["sequences"]:
        seq = Path(s["dir"])
        prev = None
        for name, ids in zip(s["frames"], s["people"]):
            c2w = np.load(seq / "cam" / f"{name}.npz")["pose"].astype(np.float64)
            world = camera_vertices[seq, name] @ c2w[:3, :3].T + c2w[:3, 3]
            current = dict(zip(ids, world))
            if prev is not None:
                for i in current.keys() & prev.keys():
                    assert np.abs(current[i] - prev[i]).max() < 1e-4
                    checked += 1
            prev = current
    assert checked > 10


def test_scene_depth_is_analytic(dataset):
    _, info = dataset
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    for seq, name, _ in _frames(info):
        cam, _, depth, mask = _load(seq, name)
        K, c2w = cam["intrinsics"].astype(np.float64), cam["pose"].astype(np.float64)
        # ray with unit z in the camera, so its parameter at a hit is the z-depth
        ray_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        d, o = ray_cam @ c2w[:3, :3].T, c2w[:3, 3]
        with np.errstate(divide="ignore"):
            t_floor = np.where(d[..., 1] > 0, (syn.FLOOR_Y - o[1]) / d[..., 1], np.inf)
            t_wall = np.where(d[..., 2] > 0, (syn.WALL_Z - o[2]) / d[..., 2], np.inf)
        t_wall[o[1] + t_wall * d[..., 1] < syn.WALL_TOP] = np.inf
        expected = np.minimum(t_floor, t_wall)
        scene = (mask == 0) & (depth > 0)
        hit = scene & np.isfinite(expected)
        np.testing.assert_allclose(depth[hit], expected[hit], rtol=1e-6)
        assert (depth[scene & ~hit] == syn.SKY_DEPTH).all()
        # people are in front of the scene behind them
        human = (mask > 0) & (depth > 0)
        assert (depth[human] < expected[human]).all()


def test_vertices_project_into_the_mask(dataset, camera_vertices):
    _, info = dataset
    for seq, name, ids in _frames(info):
        if not ids:
            continue
        cam, _, _, mask = _load(seq, name)
        K = cam["intrinsics"].astype(np.float64)
        for x in camera_vertices[seq, name]:
            uv = np.round(x[:, :2] / x[:, 2:] * np.diag(K)[:2] + K[:2, 2]).astype(int)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
            assert inside.any()
            hits = mask[uv[inside, 1], uv[inside, 0]] > 0
            # only vertices hidden by the floor they stand on (feet) may miss
            assert hits.mean() > 0.98, (seq, name, hits.mean())


def test_official_smplx_agrees(dataset, camera_vertices, smplx_root):
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    _, info = dataset
    seq, name, ids = next(f for f in _frames(info) if len(f[2]) >= 2)
    smpl = _load(seq, name)[1]
    P = len(ids)
    ref = smplx.create(
        str(smplx_root),
        "smplx",
        gender="neutral",
        num_betas=11,
        use_pca=False,
        flat_hand_mean=True,
        use_face_contour=False,
        num_expression_coeffs=10,
        batch_size=P,
    )
    t = {k: torch.from_numpy(v.reshape(P, -1)) for k, v in smpl.items()}
    with torch.no_grad():
        out = ref(
            betas=t["smplx_shape"],
            global_orient=t["smplx_root_pose"],
            transl=t["smplx_transl"],
            body_pose=t["smplx_body_pose"],
            jaw_pose=t["smplx_jaw_pose"],
            leye_pose=t["smplx_leye_pose"],
            reye_pose=t["smplx_reye_pose"],
            left_hand_pose=t["smplx_left_hand_pose"],
            right_hand_pose=t["smplx_right_hand_pose"],
            expression=torch.zeros(P, 10),
        )
    ref_v = out.vertices.numpy().astype(np.float64)
    ours = camera_vertices[seq, name]
    assert np.linalg.norm(ours - ref_v) / np.linalg.norm(ref_v) < 1e-4


def test_cli(smplx_root, tmp_path, capsys):
    syn.main(
        [
            "--out",
            str(tmp_path),
            "--smplx",
            str(smplx_root),
            "--n-train",
            "1",
            "--n-test",
            "0",
            "--frames",
            "2",
            "--width",
            "48",
            "--height",
            "32",
            "--max-people",
            "1",
        ]
    )
    assert '"synth00_seq_000000"' in capsys.readouterr().out
    rgb = PIL.Image.open(tmp_path / "Training" / "synth00_seq_000000" / "rgb" / "000001.png")
    assert rgb.size == (48, 32)
    assert not (tmp_path / "Test").exists()
