"""SMPL-X in JAX against the `smplx` package (the reference Human3R calls), on a synthetic model file
in the real format (../shared/tools/make_fake_smplx.py: no licensed data), and Human3R's placement
of bodies in camera and world frames (SMPL_Layer, spec §4.6)."""

from __future__ import annotations

import os
import struct
import zipfile

import jax
import numpy as np
import pytest
from conftest import rel_l2

from human3r_jax.models import smplx as S

B = 4
# jitted once for the whole file: every call below has the same shapes, so they share one compile
forward = jax.jit(S.smplx_forward)
in_camera = jax.jit(S.bodies_in_camera)


@pytest.fixture(scope="session")
def model_file(smplx_root):
    return smplx_root / "smplx" / "SMPLX_NEUTRAL.npz"


@pytest.fixture(scope="session")
def model(smplx_root):
    return S.load_smplx(smplx_root)


@pytest.fixture(scope="session")
def reference(smplx_root):
    """smplx.create exactly as Human3R's SMPL_Layer builds it."""
    smplx = pytest.importorskip("smplx")
    return smplx.create(
        str(smplx_root),
        "smplx",
        gender="neutral",
        use_pca=False,
        flat_hand_mean=True,
        num_betas=10,
        num_expression_coeffs=10,
        use_face_contour=False,
    )


def _torch():
    return pytest.importorskip("torch")


def _rotmats(aa):
    """[..., 3] axis-angle -> [..., 3, 3] by smplx's own Rodrigues, so both sides see the same matrices."""
    rodrigues = pytest.importorskip("smplx.lbs").batch_rodrigues
    return rodrigues(_torch().from_numpy(aa).reshape(-1, 3)).reshape(*aa.shape, 3).numpy()


@pytest.fixture(scope="session")
def params():
    """Random betas [B,10], expression [B,10], axis-angle [B,55,3] and its rotations [B,55,3,3]."""
    rng = np.random.default_rng(0)
    betas = rng.normal(size=(B, 10)).astype(np.float32)
    expression = rng.normal(size=(B, 10)).astype(np.float32)
    aa = (0.6 * rng.normal(size=(B, 55, 3))).astype(np.float32)
    return betas, expression, aa, _rotmats(aa)


def _ref_forward(reference, betas, expression, aa55):
    """smplx in SMPL-X joint order (global, body, jaw, eyes, left hand, right hand)."""
    torch = _torch()
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        out = reference(
            betas=t(betas),
            expression=t(expression),
            global_orient=t(aa55[:, 0]),
            body_pose=t(aa55[:, 1:22].reshape(B, -1)),
            jaw_pose=t(aa55[:, 22]),
            leye_pose=t(aa55[:, 23]),
            reye_pose=t(aa55[:, 24]),
            left_hand_pose=t(aa55[:, 25:40].reshape(B, -1)),
            right_hand_pose=t(aa55[:, 40:55].reshape(B, -1)),
        )
    return out.vertices.numpy(), out.joints.numpy()


def test_forward_matches_smplx(model, reference, params):
    betas, expression, aa, rotmats = params
    ref_v, ref_j = _ref_forward(reference, betas, expression, aa)
    out = forward(model, betas, expression, rotmats)
    assert out.vertices.shape == (B, 10475, 3) and out.joints.shape == (B, 127, 3)
    assert out.vertices.dtype == np.float32
    # the inputs move the mesh far from the template, so the comparison means something
    assert rel_l2(np.broadcast_to(model.v_template, ref_v.shape), ref_v) > 0.05
    assert rel_l2(out.vertices, ref_v) < 1e-5
    assert rel_l2(out.joints, ref_j) < 1e-5


def test_human3r_layer_matches_official_steps(model, reference, params):
    """bodies_in_camera == SMPL_Layer(person_center='head'): body with zero global orientation and
    eyes, rotated about the pelvis by rotation 0, then the head joint moved to `transl`."""
    betas, expression, _, _ = params
    rng = np.random.default_rng(1)
    aa53 = (0.6 * rng.normal(size=(B, 53, 3))).astype(np.float32)  # Human3R's order
    rot53 = _rotmats(aa53)
    transl = rng.normal(size=(B, 3)).astype(np.float32) + np.float32([0, 0, 4])

    aa55 = np.concatenate(
        [np.zeros_like(aa53[:, :1]), aa53[:, 1:22], aa53[:, 52:53], np.zeros_like(aa53[:, :2]), aa53[:, 22:52]], axis=1
    )
    v0, j0 = _ref_forward(reference, betas, expression, aa55)
    R = rot53[:, 0]
    pelvis = j0[:, :1]
    j = np.einsum("bij,bnj->bni", R, j0 - pelvis)
    v = np.einsum("bij,bnj->bni", R, v0 - pelvis)
    head = j[:, 15:16]
    ref_v, ref_j = v - head + transl[:, None], j - head + transl[:, None]

    out = in_camera(model, betas, expression, rot53, transl)
    assert rel_l2(out.vertices, ref_v) < 1e-5
    assert rel_l2(out.joints, ref_j) < 1e-5
    np.testing.assert_allclose(out.joints[:, S.HEAD], transl, atol=1e-5)


def test_to_world(model, params):
    betas, expression, _, rotmats = params
    rng = np.random.default_rng(2)
    cam = forward(model, betas, expression, rotmats)  # any [B, N, 3] bodies
    q, _ = np.linalg.qr(rng.normal(size=(B, 3, 3)))
    c2w = np.tile(np.eye(4, dtype=np.float32), (B, 1, 1))
    c2w[:, :3, :3] = q * np.sign(np.linalg.det(q))[:, None, None]
    c2w[:, :3, 3] = rng.normal(size=(B, 3))

    def direct(x, T):
        return np.einsum("bij,bnj->bni", T[..., :3, :3], np.asarray(x, np.float64)) + T[..., None, :3, 3]

    per_person = S.to_world(cam, c2w)
    shared = S.to_world(cam, c2w[0])
    for out, T in ((per_person, c2w), (shared, np.broadcast_to(c2w[0], c2w.shape))):
        assert rel_l2(out.vertices, direct(cam.vertices, T)) < 1e-6
        assert rel_l2(out.joints, direct(cam.joints, T)) < 1e-6


def test_loaded_model(model, model_file):
    assert S.load_smplx(model_file).parents == model.parents  # a file path works like the directory
    assert model.parents[0] == -1 and all(0 <= p < j for j, p in enumerate(model.parents[1:], 1))
    assert (model.num_betas, model.num_expression) == (10, 10)
    assert model.posedirs.shape == (10475, 3, 54 * 9) and model.faces.shape == (20908, 3)
    leaves = jax.tree.leaves(model)
    assert all(isinstance(x, jax.Array) for x in leaves) and len(leaves) == 10


# ---------------------------------------------------------------- files users may get wrong


@pytest.fixture(scope="session")
def arrays(model_file):
    """The synthetic file's entries that load without pickle (the name->index dicts do not)."""
    with np.load(model_file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k not in ("part2num", "joint2num")}


@pytest.fixture
def variant(arrays, tmp_path):
    """Write the synthetic model with some entries replaced (None removes one); deleted afterwards."""
    written = []

    def write(**changes):
        p = tmp_path / "SMPLX_NEUTRAL.npz"
        d = {**arrays, **changes}
        np.savez(p, **{k: v for k, v in d.items() if v is not None})
        written.append(p)
        return p

    yield write
    for p in written:
        p.unlink()


def test_v10_shape_layout(model, arrays, variant, params):
    """A 10 + 10 component file (SMPL-X v1.0 layout) reads its expression from components 10..19."""
    betas, expression, _, rotmats = params
    sd = arrays["shapedirs"]
    v10 = S.load_smplx(variant(shapedirs=np.concatenate([sd[:, :, :10], sd[:, :, 300:310]], 2)))
    a, b = forward(v10, betas, expression, rotmats), forward(model, betas, expression, rotmats)
    assert rel_l2(a.vertices, b.vertices) < 1e-6


def test_missing_file(tmp_path):
    with pytest.raises(S.SmplxError, match="smpl-x.is.tue.mpg.de") as e:
        S.load_smplx(tmp_path)
    assert str(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz") in str(e.value)
    with pytest.raises(S.SmplxError, match="no such file") as e:
        S.load_smplx(tmp_path / "SMPLX_NEUTRAL.npz")
    assert str(tmp_path / "SMPLX_NEUTRAL.npz") in str(e.value)


def test_gendered_file_name(model_file, tmp_path):
    male = tmp_path / "SMPLX_MALE.npz"
    os.link(model_file, male)
    with pytest.raises(S.SmplxError, match="neutral") as e:
        S.load_smplx(male)
    assert str(male) in str(e.value)


@pytest.mark.parametrize(
    "changes, names",
    [
        ({"gender": np.array("female")}, ["'gender'", "'female'"]),
        ({"v_template": np.zeros((6890, 3))}, ["'v_template'", "(6890, 3)", "SMPL+H"]),
        ({"shapedirs": np.zeros((10475, 3, 10))}, ["'shapedirs'", "10 components"]),
        ({"lmk_faces_idx": None, "lmk_bary_coords": None}, ["'lmk_faces_idx'", "'lmk_bary_coords'"]),
        ({"posedirs": np.zeros((10475, 3, 459))}, ["'posedirs'", "(10475, 3, 459)"]),
    ],
)
def test_bad_file(variant, changes, names):
    path = variant(**changes)
    with pytest.raises(S.SmplxError) as e:
        S.load_smplx(path)
    for s in [str(path), *names]:
        assert s in str(e.value)


# ---------------------------------------------------------------- inputs users may get wrong


def test_batch_mismatch(model, params):
    betas, expression, _, rotmats = params
    with pytest.raises(S.SmplxError, match=r"batch sizes differ: betas \[4, 10\], expression \[3, 10\]"):
        S.smplx_forward(model, betas, expression[:3], rotmats)
    with pytest.raises(S.SmplxError, match=r"rotmats \[2, 55, 3, 3\]"):
        S.smplx_forward(model, betas, expression, rotmats[:2])
    with pytest.raises(S.SmplxError, match=r"transl \[3, 3\]"):
        S.bodies_in_camera(model, betas, expression, rotmats, np.zeros((3, 3), np.float32))
    body = forward(model, betas, expression, rotmats)
    with pytest.raises(S.SmplxError, match=r"cam2world \[2, 4, 4\]"):
        S.to_world(body, np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)))


def test_bad_input_shapes(model, params):
    betas, expression, _, rotmats = params
    with pytest.raises(S.SmplxError, match=r"rotmats has shape \[4, 52, 3, 3\]"):
        S.smplx_forward(model, betas, expression, rotmats[:, :52])
    with pytest.raises(S.SmplxError, match=r"betas has shape \[4, 11\]"):
        S.smplx_forward(model, np.zeros((B, 11), np.float32), expression, rotmats)


def test_no_people(model):
    """A frame without detections (Human3R skips the body model there) gives empty outputs."""
    z = np.zeros
    out = S.to_world(in_camera(model, z((0, 10)), z((0, 10)), z((0, 53, 3, 3)), z((0, 3))), np.eye(4))
    assert out.vertices.shape == (0, 10475, 3) and out.joints.shape == (0, 127, 3)


# ---------------------------------------------------------------- damaged or hostile files

_REQUIRED = (
    "v_template",
    "f",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "kintree_table",
    "weights",
    "lmk_faces_idx",
    "lmk_bary_coords",
)


def _small_file(tmp_path, **changes):
    """A tiny file with every required entry (of the wrong shapes: reading fails before shapes are checked)."""
    p = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(p, **{**{k: np.zeros(3, np.float32) for k in _REQUIRED}, **changes})
    return p


def test_object_array_entry(tmp_path):
    path = _small_file(tmp_path, weights=np.array([{"a": 1}], object))
    with pytest.raises(S.SmplxError, match=r"entry 'weights' holds Python objects; it is not read") as e:
        S.load_smplx(path)
    assert str(path) in str(e.value)
    # an object-dtype 'gender' is skipped, not unpickled: the file name is then the only gender check
    path = _small_file(tmp_path, gender=np.array(["female"], object))
    with pytest.raises(S.SmplxError, match=r"entry 'v_template' has shape \(3,\)"):
        S.load_smplx(path)


def test_string_entry(tmp_path):
    path = _small_file(tmp_path, v_template=np.array(["0 1 2"]))
    with pytest.raises(S.SmplxError, match=r"entry 'v_template' has dtype <U5; SMPL-X stores numbers there"):
        S.load_smplx(path)


def test_truncated_file(tmp_path):
    path = _small_file(tmp_path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(S.SmplxError, match="not an .npz archive") as e:
        S.load_smplx(path)
    assert str(path) in str(e.value)


def test_corrupted_entry(tmp_path):
    """One flipped byte in the data of entry 'kintree_table': its CRC fails when it is read."""
    path = _small_file(tmp_path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("kintree_table.npy")
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size - 1)  # the last data byte
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    with pytest.raises(S.SmplxError, match=r"entry 'kintree_table' is corrupt or truncated \(BadZipFile: Bad CRC") as e:
        S.load_smplx(path)
    assert str(path) in str(e.value)
