"""The evaluation's body models (human3r_jax.evaluation.body_models) on synthetic stand-ins of the licensed
files (tests/fake_body_models.py), against the smplx package (the reference the official evaluation calls).

Tolerances: SMPL and the RICH SMPL-X ground truth agree with smplx at relative L2 ≤ 1e-5 in float32 (the
official dtype); SMPL with a float64 smplx agrees at ≤ 1e-7 (smplx rounds the model arrays to float32 first).
"""

from __future__ import annotations

import os
import pickle
import shutil

import fake_body_models as fake
import numpy as np
import pytest
import scipy.sparse
from conftest import rel_l2

from human3r_jax.evaluation import body_models as BM
from human3r_jax.models import smplx as S

torch = pytest.importorskip("torch")  # smplx and torch: test-only references
smplx = pytest.importorskip("smplx")

N = 6


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(1)
    pose = rng.normal(scale=0.5, size=(N, 24, 3))
    pose[0] = 0  # the rest pose: Rodrigues' epsilon path
    return rng.normal(size=(N, 10)), pose, rng.normal(size=(N, 3))


def _smplx_reference_smpl(path, betas, pose, transl, dtype):
    model = smplx.SMPL(model_path=str(path), dtype=dtype)
    t = lambda x: torch.tensor(x, dtype=dtype)
    with torch.no_grad():
        out = model(
            betas=t(betas),
            global_orient=t(pose[:, 0]),
            body_pose=t(pose[:, 1:].reshape(len(pose), 69)),
            transl=t(transl),
        )
    return out.vertices.double().numpy(), out.joints[:, :24].double().numpy()


# ---------------------------------------------------------------- SMPL


@pytest.mark.parametrize("gender", ["neutral", "female"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-7)])
def test_smpl_forward_matches_smplx(tmp_path, params, gender, dtype, tol):
    path = tmp_path / f"SMPL_{gender.upper()}.pkl"
    fake.write_fake_smpl(path, gender, seed=3)
    betas, pose, transl = params
    verts, joints = BM.smpl_forward(BM.load_smpl(path), betas, pose, transl)
    ref_v, ref_j = _smplx_reference_smpl(path, betas, pose, transl, dtype)
    assert verts.shape == (N, 6890, 3) and joints.shape == (N, 24, 3) and verts.dtype == np.float64
    assert rel_l2(verts, ref_v) <= tol and rel_l2(joints, ref_j) <= tol
    assert rel_l2(verts, verts[:, :1]) > 0.1  # the poses differ: the comparison is not of rest meshes


def test_smpl_forward_without_transl_and_chunks(tmp_path, params, monkeypatch):
    path = tmp_path / "SMPL_MALE.pkl"
    fake.write_fake_smpl(path, "male")
    model = BM.load_smpl(path)
    betas, pose, transl = params
    v, j = BM.smpl_forward(model, betas, pose, transl)
    monkeypatch.setattr(BM, "_CHUNK", 4)  # N = 6 → two chunks, the last one short
    v0, j0 = BM.smpl_forward(model, betas, pose)
    np.testing.assert_allclose(v0 + transl[:, None], v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(j0 + transl[:, None], j, rtol=0, atol=1e-12)
    # the joints are the posed skeleton: at rest they are the regressed joints of the shaped template
    rest_v, rest_j = BM.smpl_forward(model, betas[:1], np.zeros((1, 24, 3)))
    np.testing.assert_allclose(rest_j[0], model.J_regressor @ rest_v[0], atol=1e-12)


def test_batch_rodrigues_matches_smplx():
    from smplx.lbs import batch_rodrigues

    r = np.random.default_rng(0).normal(size=(50, 3))
    r[0] = 0
    r[1] = [1e-9, 0, 0]
    ref = batch_rodrigues(torch.tensor(r)).numpy()
    np.testing.assert_allclose(BM.batch_rodrigues(r), ref, rtol=0, atol=1e-15)
    assert (BM.batch_rodrigues(np.zeros(3)) == np.eye(3)).all()


def test_genders_differ():
    a, b = fake.fake_smpl_arrays("male", 0), fake.fake_smpl_arrays("female", 0)
    assert rel_l2(a["v_template"], b["v_template"]) > 0.05
    for arrays in (a, b):
        np.testing.assert_allclose(arrays["weights"].sum(1), 1, atol=1e-12)


def test_pkl_npz_and_chumpy_give_the_same_model(tmp_path):
    arrays = fake.write_fake_smpl(tmp_path / "SMPL_NEUTRAL.pkl", "neutral", seed=5)
    fake.write_fake_smpl(tmp_path / "chumpy.pkl", "neutral", seed=5, chumpy=True)
    assert b"chumpy.ch" in (tmp_path / "chumpy.pkl").read_bytes()
    keys = ("v_template", "shapedirs", "posedirs", "weights", "kintree_table", "f")
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", J_regressor=arrays["J_regressor"].toarray(), **{k: arrays[k] for k in keys})
    ref = BM.load_smpl(tmp_path / "SMPL_NEUTRAL.pkl")
    assert ref.J_regressor.shape == (24, 6890) and ref.faces.dtype == np.int64 and ref.parents[:4] == (-1, 0, 0, 0)
    np.testing.assert_array_equal(ref.J_regressor, arrays["J_regressor"].toarray())
    for other in (BM.load_smpl(tmp_path / "chumpy.pkl"), BM.load_smpl(tmp_path / "SMPL_NEUTRAL.npz")):
        for field in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces"):
            np.testing.assert_array_equal(getattr(other, field), getattr(ref, field), err_msg=field)
        assert other.parents == ref.parents


def test_smpl_keeps_ten_shape_components(tmp_path):
    arrays = fake.fake_smpl_arrays("neutral", 0)
    extra = np.concatenate([arrays["shapedirs"], np.ones((6890, 3, 290))], axis=2)
    keys = ("v_template", "posedirs", "weights", "kintree_table", "f")
    np.savez(
        tmp_path / "m.npz", shapedirs=extra, J_regressor=arrays["J_regressor"].toarray(), **{k: arrays[k] for k in keys}
    )
    np.testing.assert_array_equal(BM.load_smpl(tmp_path / "m.npz").shapedirs, arrays["shapedirs"])


@pytest.mark.parametrize(
    "key, value, names",
    [
        ("posedirs", np.zeros((6890, 3, 200)), ["'posedirs'", "(6890, 3, 200)", "(6890, 3, 207)"]),
        ("v_template", np.zeros((10475, 3)), ["'v_template'", "(10475, 3)", "(6890, 3)"]),
        ("shapedirs", np.zeros((6890, 3, 4)), ["'shapedirs'", "4 components"]),
        ("weights", np.full((6890, 24), np.nan), ["'weights'", "non-finite"]),
        ("f", np.full((13776, 3), 7000), ["'f'", "[0, 6890)"]),
        (
            "kintree_table",
            np.array([[0, 5] + [0] * 22, list(range(24))]),
            ["'kintree_table'", "parents before children"],
        ),
        ("J_regressor", "text", ["'J_regressor'", "expected an array, found str"]),
    ],
)
def test_bad_smpl_file_is_named(tmp_path, key, value, names):
    arrays = fake.fake_smpl_arrays("male", 0)
    arrays[key] = value
    path = tmp_path / "SMPL_MALE.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    with pytest.raises(BM.BodyModelError) as e:
        BM.load_smpl(path)
    for s in [str(path), *names]:
        assert s in str(e.value)
    assert str(e.value).startswith(str(path))


def test_smpl_input_shapes(tmp_path, params):
    fake.write_fake_smpl(tmp_path / "m.pkl", "neutral")
    model = BM.load_smpl(tmp_path / "m.pkl")
    betas, pose, transl = params
    with pytest.raises(BM.BodyModelError, match=r"pose has shape \[6, 72\]; expected \[N, 24, 3\]"):
        BM.smpl_forward(model, betas, pose.reshape(N, 72))
    with pytest.raises(BM.BodyModelError, match=r"batch sizes differ: betas \[5, 10\], pose \[6, 24, 3\]"):
        BM.smpl_forward(model, betas[:5], pose)
    with pytest.raises(BM.BodyModelError, match=r"transl \[2, 3\]"):
        BM.smpl_forward(model, betas, pose, transl[:2])


# ---------------------------------------------------------------- SMPL-X ground truth (RICH)


@pytest.mark.parametrize("gender", ["male", "female"])
def test_smplx_gt_forward_matches_smplx(body_models_root, gender):
    path = body_models_root / "smplx" / f"SMPLX_{gender.upper()}.npz"
    model = S.load_smplx(path, gender=gender)
    hands_mean = BM.read_hands_mean(path)
    assert hands_mean.shape == (2, 45) and np.abs(hands_mean).max() > 0.1  # the mean hands are not flat
    rng = np.random.default_rng(2)
    n = 3
    betas, orient = rng.normal(size=(n, 10)), rng.normal(scale=0.8, size=(n, 3))
    body, transl = rng.normal(scale=0.4, size=(n, 21, 3)), rng.normal(size=(n, 3))
    got = BM.smplx_gt_forward(model, hands_mean, betas, orient, body, transl)

    ref_model = smplx.SMPLX(
        str(body_models_root / "smplx"), gender=gender, use_pca=True, num_pca_comps=12, flat_hand_mean=False
    )
    t = lambda x: torch.tensor(x, dtype=torch.float32)
    z = torch.zeros
    with torch.no_grad():
        ref = ref_model(
            betas=t(betas),
            global_orient=t(orient),
            body_pose=t(body.reshape(n, 63)),
            transl=t(transl),
            left_hand_pose=z(n, 12),
            right_hand_pose=z(n, 12),
            jaw_pose=z(n, 3),
            leye_pose=z(n, 3),
            reye_pose=z(n, 3),
            expression=z(n, 10),
        ).vertices.numpy()
    assert got.shape == (n, 10475, 3) and got.dtype == np.float32
    assert rel_l2(got, ref) <= 1e-5
    flat = BM.smplx_gt_forward(model, np.zeros((2, 45)), betas, orient, body, transl)
    assert rel_l2(flat, ref) > 10 * rel_l2(got, ref)  # the hand mean matters at this tolerance


def test_smplx_gt_forward_chunks(body_models_root, monkeypatch):
    """Padded chunks give the rows of one batch."""
    path = body_models_root / "smplx" / "SMPLX_MALE.npz"
    model, hands_mean = S.load_smplx(path, gender="male"), BM.read_hands_mean(path)
    rng = np.random.default_rng(3)
    args = (
        rng.normal(size=(5, 10)),
        rng.normal(size=(5, 3)),
        rng.normal(scale=0.4, size=(5, 21, 3)),
        rng.normal(size=(5, 3)),
    )
    whole = BM.smplx_gt_forward(model, hands_mean, *args)
    monkeypatch.setattr(BM, "_CHUNK", 2)
    np.testing.assert_allclose(BM.smplx_gt_forward(model, hands_mean, *args), whole, rtol=0, atol=1e-5)
    assert BM.smplx_gt_forward(model, hands_mean, *(a[:0] for a in args)).shape == (0, 10475, 3)
    with pytest.raises(BM.BodyModelError, match=r"body_pose has shape \[5, 23, 3\]; expected \[N, 21, 3\]"):
        BM.smplx_gt_forward(model, hands_mean, args[0], args[1], np.zeros((5, 23, 3)), args[3])
    with pytest.raises(BM.BodyModelError, match=r"hands_mean has shape \[90\]; expected \[2, 45\]"):
        BM.smplx_gt_forward(model, hands_mean.ravel(), *args)


# ---------------------------------------------------------------- gendered SMPL-X files


def test_load_smplx_gendered(body_models_root, tmp_path):
    male = S.load_smplx(body_models_root, gender="male")  # a folder: smplx/SMPLX_MALE.npz
    neutral = S.load_smplx(body_models_root / "smplx" / "SMPLX_NEUTRAL.npz")
    np.testing.assert_array_equal(np.asarray(male.v_template), np.asarray(neutral.v_template))
    with pytest.raises(S.SmplxError, match="a gendered SMPL-X model; Human3R uses the neutral one"):
        S.load_smplx(body_models_root / "smplx" / "SMPLX_MALE.npz")
    with pytest.raises(S.SmplxError, match=r"a female SMPL-X model; asked for the male one \(SMPLX_MALE\.npz"):
        S.load_smplx(body_models_root / "smplx" / "SMPLX_FEMALE.npz", gender="male")
    with pytest.raises(S.SmplxError, match="a neutral SMPL-X model; asked for the female one"):
        S.load_smplx(body_models_root / "smplx" / "SMPLX_NEUTRAL.npz", gender="female")
    with pytest.raises(S.SmplxError, match=r"gender 'other'; expected one of neutral, male, female"):
        S.load_smplx(body_models_root, gender="other")
    with pytest.raises(S.SmplxError, match=r"looked for .*SMPLX_FEMALE\.npz") as e:
        S.load_smplx(tmp_path, gender="female")
    assert "smpl-x.is.tue.mpg.de" in str(e.value)
    # the stored gender is compared with the asked one
    np.savez(tmp_path / "SMPLX_MALE.npz", gender=np.array("female"))
    with pytest.raises(S.SmplxError, match="entry 'gender' is 'female'; asked for the male SMPL-X model"):
        S.load_smplx(tmp_path / "SMPLX_MALE.npz", gender="male")
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", gender=np.array("male"))
    with pytest.raises(S.SmplxError, match="entry 'gender' is 'male'; Human3R uses the neutral SMPL-X model"):
        S.load_smplx(tmp_path / "SMPLX_NEUTRAL.npz")


# ---------------------------------------------------------------- SMPL-X → SMPL, regressors


def test_smplx2smpl_equals_dense_matmul(smplx2smpl_file):
    path, dense = smplx2smpl_file
    m = BM.load_smplx2smpl(path)
    assert m.index.shape == (6890, 3) and m.weight.dtype == np.float32
    x = np.random.default_rng(0).normal(size=(4, 10475, 3)).astype(np.float32)
    got, ref = m.apply(x), dense @ x
    assert got.dtype == np.float32 and got.shape == (4, 6890, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)  # only the summation order differs
    got64 = m.apply(x.astype(np.float64))
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, dense.astype(np.float64) @ x.astype(np.float64), rtol=1e-12, atol=1e-12)
    with pytest.raises(BM.BodyModelError, match=r"verts has shape \[4, 6890, 3\]"):
        m.apply(np.zeros((4, 6890, 3)))


def test_smplx2smpl_uneven_rows(tmp_path):
    """Rows with fewer nonzeros (here none, or one) are padded with zero weights."""
    rng = np.random.default_rng(0)
    dense = np.zeros((6890, 10475), np.float32)
    dense[0, [5, 9, 11, 700]] = [0.1, 0.2, 0.3, 0.4]
    dense[2, 10474] = 1.0
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump({"matrix": dense}, f, protocol=2)  # protocol 2: arrays as latin-1 strings
    m = BM.load_smplx2smpl(tmp_path / "m.pkl")
    x = rng.normal(size=(2, 10475, 3)).astype(np.float32)
    np.testing.assert_allclose(m.apply(x), dense @ x, rtol=1e-6, atol=1e-7)
    assert m.index.shape == (6890, 4)


def test_smplx2smpl_not_sparse_is_applied_densely(tmp_path):
    rng = np.random.default_rng(1)
    m = scipy.sparse.csr_matrix((rng.uniform(size=40), (np.full(40, 7), np.arange(40))), shape=(6890, 10475))
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump({"matrix": m}, f)
    got = BM.load_smplx2smpl(tmp_path / "m.pkl")
    assert got.dense is not None and got.index.shape == (6890, 0)
    x = rng.normal(size=(2, 10475, 3)).astype(np.float32)
    np.testing.assert_allclose(got.apply(x), m.toarray().astype(np.float32) @ x, rtol=1e-5, atol=1e-6)


def test_smplx2smpl_bad_files(tmp_path):
    for name, content, match in [
        ("a.pkl", {"mtx": np.zeros(3)}, "expected a dict with the entry 'matrix'"),
        ("b.pkl", {"matrix": np.zeros((10475, 6890), np.float32)}, r"entry 'matrix' has shape \(10475, 6890\)"),
    ]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump(content, f)
        with pytest.raises(BM.BodyModelError, match=match) as e:
            BM.load_smplx2smpl(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name))


def test_h36m_regressor(tmp_path):
    ref = fake.write_fake_h36m(tmp_path / "J_regressor_h36m.npy")
    got = BM.load_h36m_regressor(tmp_path / "J_regressor_h36m.npy")
    assert got.dtype == np.float32 and got.shape == (17, 6890)
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    np.save(tmp_path / "bad.npy", ref[:14])
    with pytest.raises(BM.BodyModelError, match=r"bad\.npy: entry 'J_regressor_h36m' has shape \(14, 6890\)"):
        BM.load_h36m_regressor(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{}], object), allow_pickle=True)
    with pytest.raises(BM.BodyModelError, match=r"obj\.npy"):
        BM.load_h36m_regressor(tmp_path / "obj.npy")


# ---------------------------------------------------------------- load_body_models


def _only(root, tmp_path, names):
    """A folder holding links to `names` only (flat: the ROOT/<name> fallback)."""
    out = tmp_path / "flat"
    out.mkdir()
    for name in names:
        os.symlink(BM.find_file(root, name), out / name)
    return out


@pytest.mark.parametrize("dataset", BM.DATASETS)
def test_load_body_models_reads_what_the_dataset_needs(body_models_root, tmp_path, dataset):
    root = _only(body_models_root, tmp_path, BM.needed_files(dataset))  # nothing else present: nothing else read
    bm = BM.load_body_models(root, dataset)
    assert isinstance(bm.smplx_neutral, S.SmplxModel) and bm.smplx_neutral.num_betas == 10
    assert bm.smplx_neutral.num_expression == 10 and bm.smplx2smpl.index.shape == (6890, 3)
    neutral = BM.load_smpl(body_models_root / "smpl" / "SMPL_NEUTRAL.pkl")
    if dataset == "rich":
        assert set(bm.smpl) == {"neutral"} and set(bm.smplx_gendered) == set(bm.hands_mean) == {"male", "female"}
        assert bm.hands_mean["male"].shape == (2, 45)
    else:
        assert set(bm.smpl) == {"neutral", "male", "female"} and bm.smplx_gendered == bm.hands_mean == {}
        assert rel_l2(bm.smpl["male"].v_template, bm.smpl["female"].v_template) > 0.05
    if dataset == "3dpw":
        h36m = np.load(body_models_root / "smpl" / "J_regressor_h36m.npy")
        np.testing.assert_array_equal(
            bm.regressor, h36m[[6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]].astype(np.float32)
        )
        assert bm.pelvis == (2, 3)
    else:
        np.testing.assert_array_equal(bm.regressor, neutral.J_regressor[:24].astype(np.float32))
        assert bm.pelvis == (1, 2)
    assert bm.regressor.dtype == np.float32


@pytest.mark.parametrize("name", list(BM.FILES))
def test_missing_file_names_it_and_its_source(body_models_root, tmp_path, name):
    needing = [d for d in BM.DATASETS if name in BM.needed_files(d)]
    root = _only(body_models_root, tmp_path, [n for n in BM.FILES if n != name])
    for dataset in needing:
        with pytest.raises(BM.BodyModelError) as e:
            BM.load_body_models(root, dataset)
        msg = str(e.value)
        assert msg.startswith(str(root / BM.FILES[name].sub / name)) and str(root / name) in msg
        assert BM.FILES[name].source in msg and "licensed" in msg
    site = (
        "smpl.is.tue.mpg.de"
        if name.startswith("SMPL_")
        else "smpl-x.is.tue.mpg.de"
        if name.startswith("SMPLX_")
        else "fetch_smplx.sh"
    )
    assert site in BM.FILES[name].source
    assert needing  # every file is needed by some dataset


def test_load_body_models_bad_arguments(body_models_root, tmp_path):
    with pytest.raises(BM.BodyModelError, match="unknown dataset 'bedlam'"):
        BM.load_body_models(body_models_root, "bedlam")
    with pytest.raises(BM.BodyModelError, match="no such folder"):
        BM.load_body_models(tmp_path / "nowhere", "3dpw")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused(body_models_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(body_models_root, root, symlinks=True)
    marker = tmp_path / "pwned"
    with open(root / "smpl" / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump({"v_template": _Evil(marker)}, f, protocol=2)
    with pytest.raises(BM.BodyModelError, match=r"SMPL_NEUTRAL\.pkl: .*refusing to load (posix|os|nt)\.system"):
        BM.load_body_models(root, "emdb1")
    assert not marker.exists()


def test_wrong_shape_named_by_load_body_models(body_models_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(body_models_root, root, symlinks=True)
    (root / "smpl" / "J_regressor_h36m.npy").unlink()
    np.save(root / "smpl" / "J_regressor_h36m.npy", np.zeros((24, 6890)))
    with pytest.raises(
        BM.BodyModelError,
        match=r"J_regressor_h36m\.npy: entry 'J_regressor_h36m' has shape "
        r"\(24, 6890\); expected \(17, 6890\)",
    ):
        BM.load_body_models(root, "3dpw")
    # a gendered SMPL-X file that says another gender is refused through load_body_models too
    (root / "smplx" / "SMPLX_MALE.npz").unlink()
    np.savez(root / "smplx" / "SMPLX_MALE.npz", gender=np.array("female"))
    with pytest.raises(BM.BodyModelError, match=r"SMPLX_MALE\.npz: entry 'gender' is 'female'"):
        BM.load_body_models(root, "rich")
