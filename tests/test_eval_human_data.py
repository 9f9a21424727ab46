"""Human-mesh benchmark readers: 3DPW preparation against the official formula, the frames and ground truth
each dataset feeds the evaluation, and one clear error per bad input."""

import os
import pickle
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from fake_body_models import write_fake_smpl
from fake_human_datasets import RICH_SEQUENCES, write_3dpw_raw, write_emdb, write_rich

from human3r_jax.evaluation import human_data as hd
from human3r_jax.evaluation.body_models import load_smpl

OFFICIAL_GIT = "/work/.mirror/AdrienBousquieEPFL+Human3R/repo"


@pytest.fixture(scope="module")
def smpl_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl")
    paths = {}
    for seed, gender in enumerate(("male", "female")):
        paths[gender] = folder / f"SMPL_{gender.upper()}.pkl"
        write_fake_smpl(paths[gender], gender, seed + 1)
    return paths


@pytest.fixture(scope="module")
def smpl_models(smpl_paths):
    return load_smpl(smpl_paths["male"]), load_smpl(smpl_paths["female"])


@pytest.fixture(scope="module")
def threedpw(tmp_path_factory, smpl_models):
    """(root, raw release dicts, prepared annotations)."""
    root = tmp_path_factory.mktemp("3dpw")
    raw = write_3dpw_raw(root, seed=0)
    annots = hd.prepare_3dpw(root, *smpl_models)
    return root, raw, annots


def expect_error(fn, path, needle=""):
    """fn raises one HumanDataError whose message starts with `path` and contains `needle`."""
    with pytest.raises(hd.HumanDataError) as info:
        fn()
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert needle in message, message
    return message


def rodrigues(v):
    """[N, 3] axis-angle → [N, 3, 3] (test-local, independent of the module's scipy conversion)."""
    theta = np.linalg.norm(v, axis=-1)[:, None, None]
    k = v / np.maximum(theta[:, :, 0], 1e-12)
    K = np.zeros((len(v), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(0, 2, 1)
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def rotvec(R):
    """[3, 3] → axis-angle in [0, π) via the quaternion (test-local)."""
    w = np.sqrt(max(0.0, 1 + np.trace(R))) / 2
    xyz = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (4 * w)
    angle = 2 * np.arctan2(np.linalg.norm(xyz), w)
    return xyz / np.linalg.norm(xyz) * angle


def official_person(layers, raw, i, k):
    """The official create_annots formula for person i at frame k, in float64 with the smplx library."""
    T = raw["cam_poses"][k]
    R, t = T[:3, :3], T[:3, 3]
    poses = raw["poses"][i][k].reshape(24, 3)
    root = rotvec(R @ rodrigues(poses[:1])[0])
    gender = "male" if raw["genders"][i] == "m" else "female"
    with torch.no_grad():
        out = layers[gender](
            global_orient=torch.from_numpy(root)[None],
            body_pose=torch.from_numpy(poses[1:]).reshape(1, 69),
            betas=torch.from_numpy(raw["betas"][i][:10])[None],
        )
    v3d, j3d = out.vertices[0].numpy(), out.joints[0].numpy()
    trans = raw["trans"][i][k]
    root_cam = j3d[:1] + trans
    mesh_cam = v3d + trans - root_cam + root_cam @ R.T + t
    return root, (mesh_cam - v3d)[0], gender


# ---------------------------------------------------------------- 3DPW preparation


def test_prepare_3dpw_matches_the_official_formula(threedpw, smpl_paths):
    import smplx

    _, raw, annots = threedpw
    layers = {g: smplx.SMPL(model_path=str(p), gender=g, dtype=torch.float64) for g, p in smpl_paths.items()}
    # courtyard: both persons valid but the woman at the last frame; downtown: frame 1 has no valid person
    assert sorted(annots) == [
        "courtyard_a_00/image_00000.jpg",
        "courtyard_a_00/image_00001.jpg",
        "courtyard_a_00/image_00002.jpg",
        "downtown_b_01/image_00000.jpg",
        "downtown_b_01/image_00002.jpg",
    ]
    worst_t = 0.0
    for key, entry in annots.items():
        seq, image = key.split("/")
        k, r = int(image[6:11]), raw[seq]
        K = r["cam_intrinsics"]
        np.testing.assert_array_equal(entry["focal"], np.float32([K[0, 0], K[1, 1]]))
        np.testing.assert_array_equal(entry["princpt"], np.float32([K[0, 2], K[1, 2]]))
        np.testing.assert_array_equal(entry["size"], [108, 192])
        np.testing.assert_array_equal(entry["cam_poses"], r["cam_poses"][k].astype(np.float32))
        assert entry["focal"].dtype == entry["cam_poses"].dtype == np.float32 and entry["size"].dtype == np.int32
        persons = [i for i in range(len(r["genders"])) if r["campose_valid"][i][k]]
        assert len(entry["humans"]) == len(persons)
        for i, hum in zip(persons, entry["humans"]):
            root_pose, transl, gender = official_person(layers, r, i, k)
            assert hum["smpl_gender"] == gender
            assert {n: a.shape for n, a in hum.items() if n != "smpl_gender"} == {
                "smpl_root_pose": (1, 3),
                "smpl_body_pose": (23, 3),
                "smpl_shape": (10,),
                "smpl_transl": (3,),
            }
            assert all(a.dtype == np.float32 for n, a in hum.items() if n != "smpl_gender")
            np.testing.assert_allclose(hum["smpl_root_pose"][0], root_pose, atol=1e-6)
            np.testing.assert_array_equal(hum["smpl_body_pose"], r["poses"][i][k, 3:].reshape(23, 3).astype(np.float32))
            np.testing.assert_array_equal(hum["smpl_shape"], r["betas"][i][:10].astype(np.float32))
            worst_t = max(worst_t, np.linalg.norm(hum["smpl_transl"] - transl) / np.linalg.norm(transl))
    assert worst_t <= 1e-5
    assert annots["courtyard_a_00/image_00000.jpg"]["humans"][1]["smpl_gender"] == "female"


def test_matrix_to_rotvec_is_the_official_conversion():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for angle in (0.0, 1e-9, 1e-3, 1.0, 3.0, np.pi - 1e-6):
        R = Rotation.from_rotvec(axes * angle).as_matrix()
        np.testing.assert_allclose(hd.matrix_to_rotvec(R), axes * angle, atol=1e-9)
    # a camera rotation 1e-3 off orthonormal: roma 1.8's rotmat_to_rotvec (Markley), not scipy's projection
    R = [[-0.418892, -0.562925, -0.714255], [0.03629, 0.776317, -0.63061], [0.907145, -0.290093, -0.303202]]
    np.testing.assert_allclose(
        hd.matrix_to_rotvec(np.array([R]))[0],
        [0.40059313398731367, -1.9004553295515465, 0.7003471099367147],
        atol=1e-14,
    )


def test_3dpw_annotations_round_trip(threedpw, tmp_path):
    _, _, annots = threedpw
    hd.save_3dpw_annotations(tmp_path / "3dpw_test.pkl", annots)
    assert [p.name for p in tmp_path.iterdir()] == ["3dpw_test.pkl"]  # no temporary file left
    back = hd.read_3dpw_annotations(tmp_path / "3dpw_test.pkl")
    assert back.keys() == annots.keys()
    for key in annots:
        for name in ("focal", "princpt", "size", "cam_poses"):
            np.testing.assert_array_equal(back[key][name], annots[key][name])
        for a, b in zip(back[key]["humans"], annots[key]["humans"]):
            assert a["smpl_gender"] == b["smpl_gender"]
            for name in ("smpl_root_pose", "smpl_body_pose", "smpl_shape", "smpl_transl"):
                np.testing.assert_array_equal(a[name], b[name])
    # the official writes with the highest protocol (5: numpy arrays through _frombuffer)
    with open(tmp_path / "official.pkl", "wb") as f:
        pickle.dump(annots, f, protocol=pickle.HIGHEST_PROTOCOL)
    assert hd.read_3dpw_annotations(tmp_path / "official.pkl").keys() == annots.keys()


def test_find_3dpw_annotations(tmp_path):
    assert hd.find_3dpw_annotations(tmp_path) is None
    (tmp_path / "3dpw_test.pkl").touch()
    assert hd.find_3dpw_annotations(tmp_path) == tmp_path / "3dpw_test.pkl"
    (tmp_path / "mine.pkl").touch()
    assert hd.find_3dpw_annotations(tmp_path / "mine.pkl") == tmp_path / "mine.pkl"


# ---------------------------------------------------------------- 3DPW sequences


def test_3dpw_sequences_gaps_removed_and_persons_depth_ordered(threedpw):
    root, raw, annots = threedpw
    court, down = hd.list_sequences("3dpw", root, annotations=annots)
    assert (court.name, down.name) == ("courtyard_a_00", "downtown_b_01")
    assert down.frames == [root / "imageFiles" / "downtown_b_01" / f"image_{k:05d}.jpg" for k in (0, 2)]
    assert (court.body, court.space) == ("smpl", "camera")
    np.testing.assert_array_equal(court.mask, [[True, True], [True, True], [True, False]])
    # the man is nearer at frames 0 and 2, the woman at frame 1
    np.testing.assert_array_equal(court.gender, [[1, 2], [2, 1], [1, 0]])
    for f, key in enumerate(sorted(k for k in annots if k.startswith("courtyard"))):
        humans = annots[key]["humans"]
        order = [1, 0] if f == 1 else list(range(len(humans)))
        for slot, h in enumerate(order):
            np.testing.assert_array_equal(court.params["transl"][f, slot], humans[h]["smpl_transl"])
            np.testing.assert_array_equal(court.params["global_orient"][f, slot], humans[h]["smpl_root_pose"][0])
            np.testing.assert_array_equal(court.params["body_pose"][f, slot], humans[h]["smpl_body_pose"])
            np.testing.assert_array_equal(court.params["betas"][f, slot], humans[h]["smpl_shape"])
        z = court.params["transl"][f, :, 2][court.mask[f]]
        assert (np.diff(z) >= 0).all() and (z > 1).all()
    assert not court.params["transl"][2, 1].any()
    K = raw["courtyard_a_00"]["cam_intrinsics"].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(court.K, np.broadcast_to(K * [[1, 0, 1], [0, 1, 1], [0, 0, 1]], (3, 3, 3)))
    np.testing.assert_array_equal(down.T_w2c, raw["downtown_b_01"]["cam_poses"][[0, 2]].astype(np.float32))
    assert court.K.dtype == court.T_w2c.dtype == court.params["transl"].dtype == np.float64
    assert court.gender.dtype == np.int8 and court.params["body_pose"].shape == (3, 2, 23, 3)


def test_only_restricts_and_names_unknown_sequences(threedpw):
    root, _, annots = threedpw
    assert [s.name for s in hd.list_sequences("3dpw", root, annotations=annots, only=["downtown_b_01"])] == [
        "downtown_b_01"
    ]
    message = expect_error(
        lambda: hd.list_sequences("3dpw", root, annotations=annots, only=["nope"]), "3DPW annotations", "'nope'"
    )
    assert "courtyard_a_00" in message
    with pytest.raises(hd.HumanDataError, match="annotations are required"):
        hd.list_sequences("3dpw", root)
    with pytest.raises(hd.HumanDataError, match="unknown human dataset"):
        hd.list_sequences("h36m", root)


# ---------------------------------------------------------------- EMDB


def test_emdb_sequences_are_the_official_lists():
    assert len(hd.EMDB_SEQUENCES[1]) == 17 and len(hd.EMDB_SEQUENCES[2]) == 25
    if not os.path.isdir(OFFICIAL_GIT):
        pytest.skip("the official repository mirror is absent")
    source = subprocess.run(
        ["git", f"--git-dir={OFFICIAL_GIT}", "show", "402f2b2:eval/global_human/data_utils.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for split in (1, 2):
        block = source.split(f"EMDB{split}_LIST = [")[1].split("]")[0]
        paths = re.findall(r"'([^']+)_data\.pkl'", block)
        assert hd.EMDB_SEQUENCES[split] == tuple("/".join(p.split("/")[:2]) for p in paths)


def test_emdb_good_frames_and_world_params(tmp_path):
    data = write_emdb(tmp_path, 1, seed=3)
    seqs = hd.list_sequences("emdb1", tmp_path)
    assert [s.name for s in seqs] == list(hd.EMDB_SEQUENCES[1])
    seq, d = seqs[0], data[seqs[0].name]
    assert seq.name == "P8/69_outdoor_cartwheel" and (seq.body, seq.space) == ("smpl", "world")
    assert seq.frames == [tmp_path / "P8" / "69_outdoor_cartwheel" / "images" / n for n in ("00000.jpg", "00002.jpg")]
    mask = d["good_frames_mask"]
    np.testing.assert_array_equal(seq.T_w2c, d["camera"]["extrinsics"][mask])
    np.testing.assert_array_equal(seq.K, [d["camera"]["intrinsics"]] * 2)
    np.testing.assert_array_equal(seq.params["global_orient"][:, 0], d["smpl"]["poses_root"][mask])
    np.testing.assert_array_equal(seq.params["body_pose"].reshape(2, 69), d["smpl"]["poses_body"][mask])
    np.testing.assert_array_equal(seq.params["betas"][:, 0], [d["smpl"]["betas"]] * 2)
    np.testing.assert_array_equal(seq.params["transl"][:, 0], d["smpl"]["trans"][mask])
    assert seq.mask.all() and seq.mask.shape == (2, 1)
    assert [s.gender[0, 0] for s in seqs[:2]] == [1, 2]
    R, t = seq.T_w2c[:, :3, :3], seq.T_w2c[:, :3, 3]
    assert (np.einsum("nij,nj->ni", R, seq.params["transl"][:, 0])[:, 2] + t[:, 2] > 2).all()  # in front


def test_emdb2_only_and_missing_sequence(tmp_path):
    names = ["P3/29_outdoor_stairs_up", "P2/19_indoor_walk_off_mvs"]
    write_emdb(tmp_path, 2, seed=4, sequences=names)
    assert [s.name for s in hd.list_sequences("emdb2", tmp_path, only=names)] == names[::-1]  # official order
    expect_error(
        lambda: hd.list_sequences("emdb2", tmp_path, only=["P8/69_outdoor_cartwheel"]),
        "EMDB-2",
        "'P8/69_outdoor_cartwheel'",
    )
    expect_error(lambda: hd.list_sequences("emdb2", tmp_path), tmp_path / "P4/35_indoor_walk", "no such file")


def rewrite_emdb(folder, change):
    pkl = next(folder.glob("*_data.pkl"))
    with open(pkl, "rb") as f:
        data = pickle.load(f)
    change(data)
    with open(pkl, "wb") as f:
        pickle.dump(data, f)
    return pkl


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
    "case", ["extra image", "no images", "non-image", "extrinsics", "gender", "mask dtype", "name", "evil"]
)
def test_emdb_bad_inputs_name_the_file(tmp_path, case):
    name = "P0/09_outdoor_walk"
    write_emdb(tmp_path, 2, seed=5, sequences=[name])
    folder = tmp_path / name
    images, pkl = folder / "images", folder / "P0_09_outdoor_walk_data.pkl"
    run = lambda: hd.list_sequences("emdb2", tmp_path, only=[name])
    if case == "extra image":
        (images / ".DS_Store").touch()  # the official listing counts it: the mask no longer fits
        expect_error(run, images, "4 entries")
    elif case == "no images":
        shutil.rmtree(images)
        expect_error(run, images, "no such folder")
    elif case == "non-image":
        (images / "00002.jpg").rename(images / "00002.txt")
        expect_error(run, images / "00002.txt", "not a .jpg")
    elif case == "extrinsics":
        rewrite_emdb(folder, lambda d: d["camera"].update(extrinsics=np.zeros((3, 3, 4))))
        expect_error(run, pkl, "camera.extrinsics: expected shape 3×4×4")
    elif case == "gender":
        rewrite_emdb(folder, lambda d: d.update(gender="neutral"))
        expect_error(run, pkl, "gender")
    elif case == "mask dtype":
        rewrite_emdb(folder, lambda d: d.update(good_frames_mask=np.array([1, 0, 1])))
        expect_error(run, pkl, "good_frames_mask must be a bool array")
    elif case == "name":
        rewrite_emdb(folder, lambda d: d.update(name="P1_14_outdoor_climb"))
        expect_error(run, pkl, "is not the sequence")
    else:
        marker = tmp_path / "pwned"
        with open(pkl, "wb") as f:
            pickle.dump(Evil(marker), f)
        expect_error(run, pkl, "refusing")
        assert not marker.exists()


def test_non_finite_values_only_matter_in_the_frames_used(tmp_path, smpl_models):
    """Frames the evaluation drops (EMDB bad frames, 3DPW invalid persons) may hold NaN; used ones may not."""
    name = "P0/09_outdoor_walk"
    write_emdb(tmp_path, 2, seed=10, sequences=[name])
    pkl = rewrite_emdb(tmp_path / name, lambda d: d["smpl"]["trans"].__setitem__(1, np.nan))  # frame 1 is bad
    assert len(hd.list_sequences("emdb2", tmp_path, only=[name])[0].frames) == 2
    rewrite_emdb(tmp_path / name, lambda d: d["camera"]["extrinsics"].__setitem__(2, np.nan))
    expect_error(
        lambda: hd.list_sequences("emdb2", tmp_path, only=[name]), pkl, "camera.extrinsics (good frames): non-finite"
    )

    write_3dpw_raw(tmp_path / "3dpw", seed=10, sequences=("courtyard_a_00", "office_b_01"))
    path = tmp_path / "3dpw" / "sequenceFiles" / "test" / "office_b_01.pkl"
    rewrite_3dpw_raw(path, lambda d: d["poses"][0].__setitem__(1, np.nan))  # frame 1: no valid person
    assert "office_b_01/image_00001.jpg" not in hd.prepare_3dpw(tmp_path / "3dpw", *smpl_models)
    rewrite_3dpw_raw(path, lambda d: d["trans"][0].__setitem__(2, np.inf))
    expect_error(lambda: hd.prepare_3dpw(tmp_path / "3dpw", *smpl_models), path, "trans[0]: non-finite")


# ---------------------------------------------------------------- RICH


def test_rich_frame_id_selection_and_static_camera(tmp_path):
    labels, cameras = write_rich(tmp_path, seed=6)
    seqs = hd.list_sequences("rich", tmp_path)
    assert [s.name for s in seqs] == list(RICH_SEQUENCES)
    seq, label = seqs[0], labels[RICH_SEQUENCES[0]]
    listing = sorted(os.listdir(tmp_path / seq.name))
    assert len(listing) == 5 and seq.frames == [tmp_path / seq.name / listing[i] for i in label["frame_id"]]
    T, K = cameras["Gym_6"]
    np.testing.assert_array_equal(seq.T_w2c, [T] * 3)
    np.testing.assert_array_equal(seq.K, [K] * 3)
    assert (seq.body, seq.space) == ("smplx", "world") and seq.gender[:, 0].tolist() == [2, 2, 2]
    gt = label["gt_smplx_params"]
    np.testing.assert_array_equal(seq.params["body_pose"].reshape(3, 63), gt["body_pose"])
    for name in ("global_orient", "betas", "transl"):
        np.testing.assert_array_equal(seq.params[name][:, 0], gt[name])
    assert seq.params["body_pose"].shape == (3, 1, 21, 3) and seqs[1].gender[0, 0] == 1
    assert [s.name for s in hd.list_sequences("rich", tmp_path, only=[RICH_SEQUENCES[1]])] == [RICH_SEQUENCES[1]]


def save_rich_labels(path, labels):
    tensors = {
        vid: {
            k: (
                torch.from_numpy(v)
                if isinstance(v, np.ndarray)
                else {n: torch.from_numpy(a) for n, a in v.items()}
                if isinstance(v, dict)
                else v
            )
            for k, v in label.items()
        }
        for vid, label in labels.items()
    }
    torch.save(tensors, path)


def test_rich_flat_layout_and_unsorted_frame_id(tmp_path):
    """Files at ROOT/ directly; a descending frame_id gives sorted frames (get_file_list sorts) while the
    ground truth stays in label order, as in the official evaluation."""
    labels, _ = write_rich(tmp_path, seed=7)
    (tmp_path / "resource" / "cam2params.pt").rename(tmp_path / "cam2params.pt")
    vid = RICH_SEQUENCES[1]
    labels[vid]["frame_id"] = labels[vid]["frame_id"][::-1].copy()
    save_rich_labels(tmp_path / "rich_test_labels.pt", labels)
    (tmp_path / "hmr4d_support" / "rich_test_labels.pt").unlink()
    seq = hd.list_sequences("rich", tmp_path)[1]
    listing = sorted(os.listdir(tmp_path / vid))
    assert seq.frames == sorted(tmp_path / vid / listing[i] for i in labels[vid]["frame_id"])
    np.testing.assert_array_equal(seq.params["transl"][:, 0], labels[vid]["gt_smplx_params"]["transl"])


@pytest.mark.parametrize(
    "case", ["no labels", "not a zip", "frame_id range", "body_pose", "camera", "gender", "non-image", "no folder"]
)
def test_rich_bad_inputs_name_the_file(tmp_path, case):
    labels, _ = write_rich(tmp_path, seed=8)
    path = tmp_path / "hmr4d_support" / "rich_test_labels.pt"
    vid = RICH_SEQUENCES[0]
    run = lambda: hd.list_sequences("rich", tmp_path)
    if case == "no labels":
        path.unlink()
        expect_error(run, path, "no such file")
    elif case == "not a zip":
        path.write_bytes(b"not a zip")
        expect_error(run, path, "not a PyTorch zip")
    elif case == "frame_id range":
        labels[vid]["frame_id"] = np.array([0, 1, 5])
        save_rich_labels(path, labels)
        expect_error(run, f"{path}: {vid}", "outside [0, 5)")
    elif case == "body_pose":
        labels[vid]["gt_smplx_params"]["body_pose"] = np.zeros((3, 69), np.float32)
        save_rich_labels(path, labels)
        expect_error(run, f"{path}: {vid}: gt_smplx_params.body_pose", "expected shape 3×63")
    elif case == "camera":
        labels["test/Kitchen_001_cooking/cam_01"] = labels.pop(vid)
        save_rich_labels(path, labels)
        expect_error(run, tmp_path / "resource" / "cam2params.pt", "no camera 'Kitchen_1'")
    elif case == "gender":
        labels[vid]["gender"] = "neutral"
        save_rich_labels(path, labels)
        expect_error(run, f"{path}: {vid}: gender")
    elif case == "non-image":
        folder = tmp_path / vid
        first = sorted(os.listdir(folder))[labels[vid]["frame_id"][0]]
        (folder / first).rename(folder / (first + ".txt"))
        expect_error(run, folder / (first + ".txt"), "not a .jpg")
    else:
        shutil.rmtree(tmp_path / vid)
        expect_error(run, tmp_path / vid, "no such folder")


# ---------------------------------------------------------------- 3DPW bad inputs


def rewrite_3dpw_raw(path, change):
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    change(data)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)


@pytest.mark.parametrize("case", ["no folder", "poses", "gender", "betas", "image", "evil"])
def test_prepare_3dpw_bad_inputs_name_the_file(tmp_path, smpl_models, case):
    write_3dpw_raw(tmp_path, seed=9, sequences=("office_a_00",))
    pkl = tmp_path / "sequenceFiles" / "test" / "office_a_00.pkl"
    run = lambda: hd.prepare_3dpw(tmp_path, *smpl_models)
    if case == "no folder":
        shutil.rmtree(tmp_path / "sequenceFiles")
        expect_error(run, tmp_path / "sequenceFiles" / "test", "no such folder")
    elif case == "poses":
        rewrite_3dpw_raw(pkl, lambda d: d["poses"].__setitem__(0, np.zeros((3, 69))))
        expect_error(run, pkl, "poses[0]: expected shape N×72")
    elif case == "gender":
        rewrite_3dpw_raw(pkl, lambda d: d.update(genders=["x"]))
        expect_error(run, pkl, "genders[0] must be 'm' or 'f'")
    elif case == "betas":
        rewrite_3dpw_raw(pkl, lambda d: d["betas"].__setitem__(0, np.zeros(5)))
        expect_error(run, pkl, "at least 10 values")
    elif case == "image":
        image = tmp_path / "imageFiles" / "office_a_00" / "image_00002.jpg"
        image.unlink()
        expect_error(run, image, "no such image")
    else:
        marker = tmp_path / "pwned"
        with open(pkl, "wb") as f:
            pickle.dump(Evil(marker), f, protocol=2)
        expect_error(run, pkl, "refusing")
        assert not marker.exists()


@pytest.mark.parametrize("case", ["three humans", "shape", "gender", "focal", "key", "evil"])
def test_read_3dpw_annotations_bad_inputs(threedpw, tmp_path, case):
    _, _, annots = threedpw
    path = tmp_path / "3dpw_test.pkl"
    key = "courtyard_a_00/image_00000.jpg"
    bad = {k: {**v, "humans": [dict(h) for h in v["humans"]]} for k, v in annots.items()}
    if case == "three humans":
        bad[key]["humans"] *= 2
        needle = "expected 1 to 2 persons"
    elif case == "shape":
        bad[key]["humans"][0]["smpl_body_pose"] = np.zeros((21, 3), np.float32)
        needle = "smpl_body_pose: expected shape 23×3"
    elif case == "gender":
        bad[key]["humans"][1]["smpl_gender"] = "f"
        needle = "smpl_gender: gender must be one of"
    elif case == "focal":
        bad[key]["focal"] = np.float32([0, 500])
        needle = "focal: the focal lengths must be positive"
    elif case == "key":
        bad["courtyard_a_00/00000.png"] = bad.pop(key)
        needle = "keys must be"
    if case == "evil":
        marker = tmp_path / "pwned"
        with open(path, "wb") as f:
            pickle.dump(Evil(marker), f)
        expect_error(lambda: hd.read_3dpw_annotations(path), path, "refusing")
        assert not marker.exists()
        return
    hd.save_3dpw_annotations(path, bad)
    expect_error(lambda: hd.read_3dpw_annotations(path), path, needle)


def test_3dpw_sequences_missing_frames(threedpw, tmp_path):
    root, _, annots = threedpw
    shutil.copytree(root / "imageFiles", tmp_path / "imageFiles")
    frame = tmp_path / "imageFiles" / "downtown_b_01" / "image_00002.jpg"
    frame.unlink()
    expect_error(lambda: hd.list_sequences("3dpw", tmp_path, annotations=annots), frame, "no such frame")
    shutil.rmtree(tmp_path / "imageFiles" / "courtyard_a_00")
    expect_error(
        lambda: hd.list_sequences("3dpw", tmp_path, annotations=annots),
        tmp_path / "imageFiles" / "courtyard_a_00",
        "no such folder",
    )
