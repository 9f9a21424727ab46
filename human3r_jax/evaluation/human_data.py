"""The human-mesh benchmarks' sequences: the frames fed to the model and their ground truth, read from the
layouts the official preparation produces and selected exactly as the official evaluation (fanegg/Human3R,
`eval/global_human/{metadata,data_utils,launch}.py`, `eval/dataset/prepare_3dpw.py`) selects them:

    3dpw   ROOT/sequenceFiles/test/<seq>.pkl (raw release, Python-2 pickles) → `prepare_3dpw` → the official
           annotation file (ROOT/3dpw_test.pkl); frames ROOT/imageFiles/<seq>/image_%05d.jpg, annotated
           frames only (frames without a valid person are dropped: the video has gaps).
    emdb1  ROOT/<P>/<seq>/<P>_<seq>_data.pkl and ROOT/<P>/<seq>/images/ (EMDB release / GVHMR layout);
    emdb2  frames = sorted images/ listing masked by good_frames_mask.
    rich   ROOT/hmr4d_support/rich_test_labels.pt (or ROOT/rich_test_labels.pt) and ROOT/resource/cam2params.pt
           (or ROOT/cam2params.pt), GVHMR's files; frames ROOT/test/<scene_seq>/cam_XX/, the sorted listing
           indexed by the labels' frame_id.

Each selected frame list is then sorted, as the official `get_file_list` does, while the ground truth stays
in the order of its selection (they differ only if RICH's frame_id is not ascending).

Pickles go through the restricted unpickler of `human3r_jax.pickles` and `.pt` files through the torch-free
reader of `converters.torch_zip`: nothing in a data file is executed. Every structure read is checked; a
malformed or missing file is one HumanDataError whose message starts with the file or folder at fault.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from scipy.spatial.transform import Rotation

from human3r_jax.converters.torch_zip import CheckpointError, TensorRef, read_checkpoint
from human3r_jax.errors import Human3rError
from human3r_jax.evaluation.body_models import SmplModel, smpl_forward
from human3r_jax.pickles import load_pickle

DATASETS = ("3dpw", "emdb1", "emdb2", "rich")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_HUMANS_3DPW = 2  # the official load_view_3dpw's slots
GENDER_IDS = {"male": 1, "female": 2}

# The official lists (eval/global_human/data_utils.py), in their order: the sequence order of the evaluation.
EMDB_SEQUENCES: dict[int, tuple[str, ...]] = {
    1: (
        "P8/69_outdoor_cartwheel",
        "P5/42_indoor_dancing",
        "P6/51_outdoor_dancing",
        "P2/23_outdoor_hug_tree",
        "P6/49_outdoor_big_stairs_down",
        "P7/59_outdoor_rom",
        "P3/31_outdoor_workout",
        "P3/33_outdoor_soccer_warmup_b",
        "P7/57_outdoor_rock_chair",
        "P3/32_outdoor_soccer_warmup_a",
        "P8/64_outdoor_skateboard",
        "P7/60_outdoor_workout",
        "P6/50_outdoor_workout",
        "P8/68_outdoor_handstand",
        "P9/76_outdoor_sitting",
        "P1/14_outdoor_climb",
        "P5/44_indoor_rom",
    ),
    2: (
        "P2/19_indoor_walk_off_mvs",
        "P3/29_outdoor_stairs_up",
        "P4/35_indoor_walk",
        "P7/55_outdoor_walk",
        "P9/80_outdoor_walk_big_circle",
        "P9/77_outdoor_stairs_up",
        "P9/79_outdoor_walk_rectangle",
        "P7/57_outdoor_rock_chair",
        "P2/24_outdoor_long_walk",
        "P3/30_outdoor_stairs_down",
        "P4/36_outdoor_long_walk",
        "P6/49_outdoor_big_stairs_down",
        "P9/78_outdoor_stairs_up_down",
        "P7/56_outdoor_stairs_up_down",
        "P2/20_outdoor_walk",
        "P3/27_indoor_walk_off_mvs",
        "P4/37_outdoor_run_circle",
        "P5/40_indoor_walk_big_circle",
        "P6/48_outdoor_walk_downhill",
        "P0/09_outdoor_walk",
        "P3/28_outdoor_walk_lunges",
        "P7/58_outdoor_parcours",
        "P7/61_outdoor_sit_lie_walk",
        "P8/64_outdoor_skateboard",
        "P8/65_outdoor_walk_straight",
    ),
}

_3DPW_KEY = re.compile(r"[^/]+/image_\d{5}\.jpg")


class HumanDataError(Human3rError):
    """A missing or malformed benchmark file or folder; the message starts with it."""


@dataclasses.dataclass
class HumanSequence:
    """One evaluated sequence: F frames fed to the model and P person slots of ground truth per frame."""

    name: str  # the official key: "downtown_arguing_00", "P8/69_outdoor_cartwheel", "test/<scene_seq>/cam_XX"
    frames: list[Path]  # [F] in the official (sorted) order
    K: np.ndarray  # [F, 3, 3] float64 GT intrinsics at the original image resolution
    T_w2c: np.ndarray  # [F, 4, 4] float64 world→camera
    body: str  # "smpl" or "smplx"
    space: str  # "camera" (3dpw: params in the camera frame) or "world"
    mask: np.ndarray  # [F, P] bool: person slots present
    gender: np.ndarray  # [F, P] int8: 1 male, 2 female, 0 empty slot
    params: dict[str, np.ndarray]  # float64 global_orient [F,P,3], body_pose [F,P,J,3], betas [F,P,10], transl [F,P,3]


# ---------------------------------------------------------------- checks


def _array(value: Any, where: str, shape: tuple[int | None, ...], finite: bool = True) -> np.ndarray:
    """`value` (an array or a lazy tensor) as a float64 array of `shape` (None: any size), finite unless
    `finite` is False (per-frame arrays whose unused frames need not be: see `_finite`)."""
    if isinstance(value, TensorRef):
        value = value.array
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise HumanDataError(f"{where}: expected a numeric array, found {type(value).__name__}")
    if value.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, value.shape)):
        want = "×".join("N" if s is None else str(s) for s in shape)
        raise HumanDataError(f"{where}: expected shape {want}, found {value.shape}")
    out = value.astype(np.float64)
    return _finite(out, where) if finite else out


def _finite(x: np.ndarray, where: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise HumanDataError(f"{where}: non-finite values")
    return x


def _intrinsics(K: np.ndarray, where: str) -> np.ndarray:
    if not (K[..., 0, 0] > 0).all() or not (K[..., 1, 1] > 0).all():
        raise HumanDataError(f"{where}: the focal lengths must be positive")
    return K


def _extrinsics(T: np.ndarray, where: str) -> np.ndarray:
    if not np.allclose(T[..., 3, :], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise HumanDataError(f"{where}: not a 4×4 rigid transform (last row is not 0 0 0 1)")
    return T


def _mapping(value: Any, where: str, keys: Sequence[str]) -> dict:
    if not isinstance(value, dict):
        raise HumanDataError(f"{where}: expected a dict, found {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise HumanDataError(f"{where}: missing keys {missing}")
    return value


def _sequence_of(value: Any, where: str, n: int | None = None) -> list:
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        length = f" of {n}" if n is not None else ""
        raise HumanDataError(
            f"{where}: expected a list{length}, found {type(value).__name__} "
            f"of length {len(value) if isinstance(value, (list, tuple)) else '-'}"
        )
    return list(value)


def _gender(value: Any, where: str, names: dict[str, int]) -> int:
    if not isinstance(value, str) or value not in names:
        raise HumanDataError(f"{where}: gender must be one of {sorted(names)}, found {value!r}")
    return names[value]


def _select(names: Sequence[str], only: Sequence[str] | None, what: str) -> list[str]:
    """`names` restricted to `only` (dataset order kept); an unknown name is an error listing known ones."""
    if only is None:
        return list(names)
    if isinstance(only, str):  # one name, not its characters
        only = [only]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise HumanDataError(
            f"{what}: no sequence {unknown[0]!r} (known: {', '.join(list(names)[:5])}{', …' if len(names) > 5 else ''})"
        )
    return [n for n in names if n in set(only)]


def _listing(folder: Path) -> list[str]:
    """Every entry of `folder`, sorted (the official listings take them all, whatever the extension)."""
    if not folder.is_dir():
        raise HumanDataError(f"{folder}: no such folder")
    return sorted(os.listdir(folder))


def _image_files(folder: Path, names: Sequence[str]) -> list[Path]:
    """The selected entries of `folder`, each an existing image file, sorted as get_file_list sorts them."""
    paths = [folder / n for n in names]
    for p in paths:
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            raise HumanDataError(f"{p}: a selected frame that is not a .jpg/.jpeg/.png file")
    return sorted(paths, key=str)


def _image_size(path: Path) -> tuple[int, int]:
    """(W, H) from the image header (no decoding)."""
    try:
        with PIL.Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise HumanDataError(f"{path}: no such image") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise HumanDataError(f"{path}: cannot read the image header ({e})") from None


# ---------------------------------------------------------------- 3DPW: preparation (create_annots)


def _read_3dpw_raw(path: Path) -> dict[str, Any]:
    """The fields of a raw 3DPW sequence pickle that the preparation reads, their shapes checked. n persons,
    F frames: poses [n,F,72], trans [n,F,3], betas [n,10], genders [n] 'm'/'f', valid [n,F] bool,
    cam_poses [F,4,4], K [3,3]. Per-frame values are checked finite where used (valid frames)."""
    raw = _mapping(
        load_pickle(path, HumanDataError, encoding="latin1"),
        str(path),
        ("poses", "trans", "betas", "genders", "cam_poses", "cam_intrinsics", "campose_valid"),
    )
    genders = _sequence_of(raw["genders"], f"{path}: genders")
    if not genders:
        raise HumanDataError(f"{path}: genders: no person")
    n = len(genders)
    for i, g in enumerate(genders):
        if not isinstance(g, str) or g not in ("m", "f"):
            raise HumanDataError(f"{path}: genders[{i}] must be 'm' or 'f', found {g!r}")
    poses = _sequence_of(raw["poses"], f"{path}: poses", n)
    frames = _array(poses[0], f"{path}: poses[0]", (None, 72), False).shape[0]
    out = {
        "poses": np.stack([_array(p, f"{path}: poses[{i}]", (frames, 72), False) for i, p in enumerate(poses)]),
        "trans": np.stack(
            [
                _array(t, f"{path}: trans[{i}]", (frames, 3), False)
                for i, t in enumerate(_sequence_of(raw["trans"], f"{path}: trans", n))
            ]
        ),
        "valid": np.stack(
            [
                _array(v, f"{path}: campose_valid[{i}]", (frames,)) != 0  # the official skips == 0
                for i, v in enumerate(_sequence_of(raw["campose_valid"], f"{path}: campose_valid", n))
            ]
        ),
        "genders": genders,
        "cam_poses": _array(raw["cam_poses"], f"{path}: cam_poses", (frames, 4, 4), False),
        "K": _intrinsics(_array(raw["cam_intrinsics"], f"{path}: cam_intrinsics", (3, 3)), f"{path}: cam_intrinsics"),
    }
    betas = []
    for i, b in enumerate(_sequence_of(raw["betas"], f"{path}: betas", n)):
        b = _array(b, f"{path}: betas[{i}]", (None,))
        if b.shape[0] < 10:
            raise HumanDataError(f"{path}: betas[{i}]: expected at least 10 values, found {b.shape[0]}")
        betas.append(b[:10])
    out["betas"] = np.stack(betas)
    return out


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """[N, 3, 3] rotation matrices → [N, 3] axis-angle of norm ≤ π, by Markley's variant of Shepperd's method
    (what roma's rotmat_to_rotvec, used by the official preparation, computes): the row of 4·q·qᵀ with the
    largest diagonal entry, normalised. For slightly non-orthonormal matrices (a camera pose off by 1e-6) this
    differs from scipy's projection onto the nearest rotation by about as much, so it is spelled out here."""
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = np.moveaxis(np.asarray(R, np.float64), 0, -1)
    trace = r00 + r11 + r22
    x = np.stack(
        [  # x[:, i] = 4·q_i·q (xyzw), a symmetric 4×4 matrix
            np.stack([1 + 2 * r00 - trace, r01 + r10, r02 + r20, r21 - r12], -1),
            np.stack([r01 + r10, 1 + 2 * r11 - trace, r12 + r21, r02 - r20], -1),
            np.stack([r02 + r20, r12 + r21, 1 + 2 * r22 - trace, r10 - r01], -1),
            np.stack([r21 - r12, r02 - r20, r10 - r01, 1 + trace], -1),
        ],
        1,
    )
    best = np.take_along_axis(x, np.einsum("nii->ni", x).argmax(1)[:, None, None], 1)[:, 0]
    q = best / np.linalg.norm(best, axis=-1, keepdims=True)
    q *= np.where(q[:, 3:] > 0, 1.0, -1.0)  # w > 0: the shortest arc
    half = np.arctan2(np.linalg.norm(q[:, :3], axis=-1), q[:, 3])
    small = half < 1e-4  # half / sin(half) by its Taylor series where the division loses precision
    scale = 2 * np.where(small, 1 + half**2 / 6, half / np.where(small, 1.0, np.sin(half)))
    return scale[:, None] * q[:, :3]


def _camera_frame_params(
    T: np.ndarray, pose_root: np.ndarray, trans: np.ndarray, betas: np.ndarray, model: SmplModel
) -> tuple[np.ndarray, np.ndarray]:
    """A person's root pose [n,3] and translation [n,3] in the camera frame, from the world→camera poses
    T [n,4,4], world root pose [n,3] and translation [n,3], and shape betas [10].

    The official rotates the root orientation into the camera (R·R_root) and moves the mesh about its root
    joint: v_cam = v + trans − j0' + R·j0' + t with j0' = j0 + trans. Its stored translation v_cam[0] − v[0]
    is R·(j0 + trans) + t − j0, where j0 is the root joint of the unposed, untranslated body (the root joint
    does not move with the pose), a function of β only."""
    R, t = T[:, :3, :3], T[:, :3, 3]
    root = matrix_to_rotvec(R @ Rotation.from_rotvec(pose_root).as_matrix())
    _, joints = smpl_forward(model, betas[None], np.zeros((1, 24, 3)), None)
    j0 = joints[0, 0]
    return root, np.einsum("nij,nj->ni", R, j0 + trans) + t - j0


def _prepare_3dpw_sequence(path: Path, image_dir: Path, models: dict[str, SmplModel]) -> dict[str, dict]:
    """The official annotation entries of one raw sequence, for its frames with at least one valid person."""
    raw, seq = _read_3dpw_raw(path), path.stem
    humans: dict[int, list[dict]] = {}  # frame → persons, in the release's person order
    for i, g in enumerate(raw["genders"]):
        frames = np.flatnonzero(raw["valid"][i])
        if not frames.size:
            continue
        gender = "male" if g == "m" else "female"
        T = _extrinsics(_finite(raw["cam_poses"][frames], f"{path}: cam_poses"), f"{path}: cam_poses")
        poses = _finite(raw["poses"][i, frames], f"{path}: poses[{i}]")
        trans = _finite(raw["trans"][i, frames], f"{path}: trans[{i}]")
        root, transl = _camera_frame_params(T, poses[:, :3], trans, raw["betas"][i], models[gender])
        for n, k in enumerate(frames):
            humans.setdefault(int(k), []).append(
                {
                    "smpl_root_pose": root[n].reshape(1, 3).astype(np.float32),
                    "smpl_body_pose": poses[n, 3:].reshape(23, 3).astype(np.float32),
                    "smpl_shape": raw["betas"][i].astype(np.float32),
                    "smpl_transl": transl[n].astype(np.float32),
                    "smpl_gender": gender,
                }
            )
    K = raw["K"]
    annots = {}
    for k in sorted(humans):
        name = f"image_{k:05d}.jpg"
        annots[f"{seq}/{name}"] = {
            "focal": np.array([K[0, 0], K[1, 1]], np.float32),
            "princpt": np.array([K[0, 2], K[1, 2]], np.float32),
            "size": np.array(_image_size(image_dir / seq / name), np.int32),
            "humans": humans[k],
            "cam_poses": raw["cam_poses"][k].astype(np.float32),
        }
    return annots


def prepare_3dpw(root: str | Path, smpl_male: SmplModel, smpl_female: SmplModel, progress: bool = False) -> dict:
    """The official 3DPW test annotations (create_annots of prepare_3dpw.py) from the raw release at `root`:
    "<seq>/image_%05d.jpg" → {"focal" [2] f32, "princpt" [2] f32, "size" [2] int32 (W, H), "humans": [{
    "smpl_root_pose" [1,3], "smpl_body_pose" [23,3], "smpl_shape" [10], "smpl_transl" [3] (f32, camera frame),
    "smpl_gender" "male"/"female"}], "cam_poses" [4,4] f32 world→camera}. Frames without a valid person are
    not written. Computed in float64 (the official uses float32 torch: differences ~1e-7 relative)."""
    root = Path(root)
    folder = root / "sequenceFiles" / "test"
    if not folder.is_dir():
        raise HumanDataError(f"{folder}: no such folder (the 3DPW release's sequenceFiles/test)")
    files = sorted(folder.glob("*.pkl"))
    if not files:
        raise HumanDataError(f"{folder}: no .pkl sequence files")
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="3DPW annotations", unit="seq")
    models = {"male": smpl_male, "female": smpl_female}
    annots: dict[str, dict] = {}
    for path in files:
        annots.update(_prepare_3dpw_sequence(path, root / "imageFiles", models))
    return annots


def save_3dpw_annotations(path: str | Path, annots: dict) -> None:
    """Write `annots` as the official 3dpw_test.pkl is written (a pickle of dicts, lists and numpy arrays),
    through a temporary file renamed into place (a crash never leaves a truncated file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump(annots, f, protocol=4)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- 3DPW: reading the annotations


def _3dpw_frame(key: Any, entry: Any, source: str) -> dict[str, Any]:
    """One annotation entry checked and converted: K [3,3], T_w2c [4,4], persons [p ≤ 2] of float64 params."""
    where = f"{source}: {key!r}"
    if not isinstance(key, str) or not _3DPW_KEY.fullmatch(key):
        raise HumanDataError(f"{where}: keys must be '<seq>/image_%05d.jpg'")
    entry = _mapping(entry, where, ("focal", "princpt", "size", "humans", "cam_poses"))
    focal = _array(entry["focal"], f"{where}: focal", (2,))
    princpt = _array(entry["princpt"], f"{where}: princpt", (2,))
    K = _intrinsics(np.array([[focal[0], 0, princpt[0]], [0, focal[1], princpt[1]], [0, 0, 1]]), f"{where}: focal")
    _array(entry["size"], f"{where}: size", (2,))
    humans = _sequence_of(entry["humans"], f"{where}: humans")
    if not 1 <= len(humans) <= MAX_HUMANS_3DPW:
        raise HumanDataError(f"{where}: humans: expected 1 to {MAX_HUMANS_3DPW} persons, found {len(humans)}")
    persons = []
    for h, hum in enumerate(humans):
        w = f"{where}: humans[{h}]"
        hum = _mapping(hum, w, ("smpl_root_pose", "smpl_body_pose", "smpl_shape", "smpl_transl", "smpl_gender"))
        persons.append(
            {
                "global_orient": _array(hum["smpl_root_pose"], f"{w}: smpl_root_pose", (1, 3))[0],
                "body_pose": _array(hum["smpl_body_pose"], f"{w}: smpl_body_pose", (23, 3)),
                "betas": _array(hum["smpl_shape"], f"{w}: smpl_shape", (10,)),
                "transl": _array(hum["smpl_transl"], f"{w}: smpl_transl", (3,)),
                "gender": _gender(hum["smpl_gender"], f"{w}: smpl_gender", GENDER_IDS),
            }
        )
    T = _extrinsics(_array(entry["cam_poses"], f"{where}: cam_poses", (4, 4)), f"{where}: cam_poses")
    return {"K": K, "T_w2c": T, "persons": persons}


def read_3dpw_annotations(path: str | Path) -> dict:
    """The official 3dpw_test.pkl or one written by `save_3dpw_annotations`, every entry checked."""
    path = Path(path)
    annots = load_pickle(path, HumanDataError)
    if not isinstance(annots, dict) or not annots:
        raise HumanDataError(f"{path}: expected a non-empty dict of 3DPW frame annotations")
    for key, entry in annots.items():
        _3dpw_frame(key, entry, str(path))
    return annots


def find_3dpw_annotations(root: str | Path) -> Path | None:
    """A prepared annotation file: `root` itself when it is a file, else ROOT/3dpw_test.pkl; None if neither."""
    root = Path(root)
    if root.is_file():
        return root
    candidate = root / "3dpw_test.pkl"
    return candidate if candidate.is_file() else None


def _3dpw_sequence(root: Path, seq: str, keys: list[str], annots: dict) -> HumanSequence:
    """Persons ordered by camera depth (transl z ascending, stable), as load_view_3dpw orders them."""
    folder = root / "imageFiles" / seq
    if not folder.is_dir():
        raise HumanDataError(f"{folder}: no such folder (frames of the 3DPW sequence {seq!r})")
    frames = [folder / k.split("/")[1] for k in keys]  # keys are sorted: the official file-list order
    for p in frames:
        if not p.is_file():
            raise HumanDataError(f"{p}: no such frame (annotated in the 3DPW annotations)")
    n, P = len(keys), MAX_HUMANS_3DPW
    K, T = np.zeros((n, 3, 3)), np.zeros((n, 4, 4))
    mask, gender = np.zeros((n, P), bool), np.zeros((n, P), np.int8)
    params = {
        "global_orient": np.zeros((n, P, 3)),
        "body_pose": np.zeros((n, P, 23, 3)),
        "betas": np.zeros((n, P, 10)),
        "transl": np.zeros((n, P, 3)),
    }
    for f, key in enumerate(keys):
        frame = _3dpw_frame(key, annots[key], "3DPW annotations")
        K[f], T[f] = frame["K"], frame["T_w2c"]
        persons = frame["persons"]
        order = np.argsort([p["transl"][2] for p in persons], kind="stable")
        for slot, j in enumerate(order):
            mask[f, slot], gender[f, slot] = True, persons[j]["gender"]
            for name, value in params.items():
                value[f, slot] = persons[j][name]
    return HumanSequence(seq, frames, K, T, "smpl", "camera", mask, gender, params)


def _list_3dpw(root: Path, annotations: dict | None, only: Sequence[str] | None) -> list[HumanSequence]:
    if annotations is None:
        raise HumanDataError("3dpw: the annotations are required (prepare_3dpw or read_3dpw_annotations)")
    by_seq: dict[str, list[str]] = {}
    for key in sorted(annotations, key=str):
        if not isinstance(key, str) or not _3DPW_KEY.fullmatch(key):
            raise HumanDataError(f"3DPW annotations: {key!r}: keys must be '<seq>/image_%05d.jpg'")
        by_seq.setdefault(key.split("/")[0], []).append(key)
    names = _select(list(by_seq), only, "3DPW annotations")
    return [_3dpw_sequence(root, seq, by_seq[seq], annotations) for seq in names]


# ---------------------------------------------------------------- EMDB


def _read_emdb(path: Path, name: str) -> dict[str, Any]:
    """One EMDB sequence pickle, checked (L frames): mask [L] bool, K [3,3], T_w2c [L,4,4], gender, and the
    world-frame SMPL poses_root [L,3], poses_body [L,69], betas [10], trans [L,3]."""
    if not path.is_file():
        raise HumanDataError(f"{path}: no such file (EMDB sequence {name})")
    annot = _mapping(
        load_pickle(path, HumanDataError),
        str(path),
        ("gender", "name", "n_frames", "good_frames_mask", "camera", "smpl"),
    )
    if not isinstance(annot["name"], str) or annot["name"].replace("_", "/", 1) != name:
        raise HumanDataError(f"{path}: name {annot['name']!r} is not the sequence {name!r}")
    n = annot["n_frames"]
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise HumanDataError(f"{path}: n_frames must be a positive integer, found {n!r}")
    mask = annot["good_frames_mask"]
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
        raise HumanDataError(
            f"{path}: good_frames_mask must be a bool array of n_frames={n}, found "
            f"{getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}"
        )
    camera = _mapping(annot["camera"], f"{path}: camera", ("intrinsics", "extrinsics"))
    smpl = _mapping(annot["smpl"], f"{path}: smpl", ("poses_root", "poses_body", "betas", "trans"))
    return {
        "mask": mask,
        "gender": _gender(annot["gender"], f"{path}: gender", GENDER_IDS),
        "K": _intrinsics(
            _array(camera["intrinsics"], f"{path}: camera.intrinsics", (3, 3)), f"{path}: camera.intrinsics"
        ),
        "betas": _array(smpl["betas"], f"{path}: smpl.betas", (10,)),
        # per frame: finite in the good frames (checked once masked)
        "T_w2c": _array(camera["extrinsics"], f"{path}: camera.extrinsics", (n, 4, 4), False),
        "poses_root": _array(smpl["poses_root"], f"{path}: smpl.poses_root", (n, 3), False),
        "poses_body": _array(smpl["poses_body"], f"{path}: smpl.poses_body", (n, 69), False),
        "trans": _array(smpl["trans"], f"{path}: smpl.trans", (n, 3), False),
    }


_EMDB_PER_FRAME = {
    "T_w2c": "camera.extrinsics",
    "poses_root": "smpl.poses_root",
    "poses_body": "smpl.poses_body",
    "trans": "smpl.trans",
}


def _emdb_sequence(root: Path, name: str) -> HumanSequence:
    person, seq = name.split("/")
    folder = root / person / seq
    pkl = folder / f"{person}_{seq}_data.pkl"
    data = _read_emdb(pkl, name)
    mask = data["mask"]
    listing = _listing(folder / "images")
    if len(listing) != len(mask):
        raise HumanDataError(
            f"{folder / 'images'}: {len(listing)} entries, but good_frames_mask of {pkl} has {len(mask)}"
        )
    frames = _image_files(folder / "images", [n for n, keep in zip(listing, mask) if keep])
    F = len(frames)
    good = {k: _finite(data[k][mask], f"{pkl}: {where} (good frames)") for k, where in _EMDB_PER_FRAME.items()}
    return HumanSequence(
        name,
        frames,
        K=np.repeat(data["K"][None], F, axis=0),
        T_w2c=_extrinsics(good["T_w2c"], f"{pkl}: camera.extrinsics"),
        body="smpl",
        space="world",
        mask=np.ones((F, 1), bool),
        gender=np.full((F, 1), data["gender"], np.int8),
        params={
            "global_orient": good["poses_root"][:, None],
            "body_pose": good["poses_body"].reshape(F, 1, 23, 3),
            "betas": np.repeat(data["betas"][None, None], F, axis=0),
            "transl": good["trans"][:, None],
        },
    )


def _list_emdb(split: int, root: Path, only: Sequence[str] | None) -> list[HumanSequence]:
    names = _select(EMDB_SEQUENCES[split], only, f"EMDB-{split}")
    return [_emdb_sequence(root, name) for name in names]


# ---------------------------------------------------------------- RICH


def _first_file(*candidates: Path) -> Path:
    for p in candidates:
        if p.is_file():
            return p
    raise HumanDataError(f"{candidates[0]}: no such file (nor {', '.join(map(str, candidates[1:]))})")


def _read_pt(path: Path) -> dict:
    try:
        return read_checkpoint(path)
    except CheckpointError as e:
        raise HumanDataError(str(e)) from None


def _rich_camera_key(vid: Any, labels_path: Path) -> str:
    """ "<scene>_<int id>" for vid = "test/<scene>_<…>/cam_<id>", as the official get_annot_rich keys cameras."""
    parts = vid.split("/") if isinstance(vid, str) else []
    cam = parts[-1].split("_") if len(parts) == 3 else []
    if len(cam) != 2 or not cam[1].isdigit():
        raise HumanDataError(f"{labels_path}: sequence {vid!r} is not 'test/<scene>_<seq>/cam_<id>'")
    return f"{parts[1].split('_')[0]}_{int(cam[1])}"


def _rich_camera(cameras: dict, key: str, vid: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The static (T_w2c [4,4], K [3,3]) of camera `key` in cam2params.pt at `path`."""
    if key not in cameras:
        raise HumanDataError(f"{path}: no camera {key!r} (for the sequence {vid!r})")
    cam = _sequence_of(cameras[key], f"{path}: {key}", 2)
    T = _extrinsics(_array(cam[0], f"{path}: {key}: T_w2c", (4, 4)), f"{path}: {key}: T_w2c")
    return T, _intrinsics(_array(cam[1], f"{path}: {key}: K", (3, 3)), f"{path}: {key}: K")


def _rich_sequence(root: Path, vid: str, label: Any, labels_path: Path, camera: tuple) -> HumanSequence:
    """Frames: the sorted listing of ROOT/<vid> indexed by frame_id [n], then sorted; params in label order."""
    where = f"{labels_path}: {vid}"
    label = _mapping(label, where, ("gender", "frame_id", "gt_smplx_params"))
    frame_id = label["frame_id"]
    frame_id = frame_id.array if isinstance(frame_id, TensorRef) else frame_id
    if not isinstance(frame_id, np.ndarray) or frame_id.dtype.kind not in "iu" or frame_id.ndim != 1:
        raise HumanDataError(f"{where}: frame_id must be a 1-D integer tensor")
    n = len(frame_id)
    smplx = _mapping(
        label["gt_smplx_params"], f"{where}: gt_smplx_params", ("global_orient", "body_pose", "betas", "transl")
    )
    shapes = {"global_orient": (n, 3), "body_pose": (n, 63), "betas": (n, 10), "transl": (n, 3)}
    params = {k: _array(smplx[k], f"{where}: gt_smplx_params.{k}", s) for k, s in shapes.items()}
    gender = _gender(label["gender"], f"{where}: gender", GENDER_IDS)
    folder = root / vid
    listing = _listing(folder)
    if n and (frame_id.min() < 0 or frame_id.max() >= len(listing)):
        raise HumanDataError(f"{where}: frame_id holds indices outside [0, {len(listing)}), the entries of {folder}")
    frames = _image_files(folder, [listing[i] for i in frame_id])
    T, K = camera
    return HumanSequence(
        vid,
        frames,
        K=np.repeat(K[None], n, axis=0),
        T_w2c=np.repeat(T[None], n, axis=0),
        body="smplx",
        space="world",
        mask=np.ones((n, 1), bool),
        gender=np.full((n, 1), gender, np.int8),
        params={
            "global_orient": params["global_orient"][:, None],
            "body_pose": params["body_pose"].reshape(n, 1, 21, 3),
            "betas": params["betas"][:, None],
            "transl": params["transl"][:, None],
        },
    )


def _list_rich(root: Path, only: Sequence[str] | None) -> list[HumanSequence]:
    labels_path = _first_file(root / "hmr4d_support" / "rich_test_labels.pt", root / "rich_test_labels.pt")
    cameras_path = _first_file(root / "resource" / "cam2params.pt", root / "cam2params.pt")
    labels, cameras = _read_pt(labels_path), _read_pt(cameras_path)
    keys = {vid: _rich_camera_key(vid, labels_path) for vid in labels}
    names = _select(list(labels), only, str(labels_path))
    return [
        _rich_sequence(root, vid, labels[vid], labels_path, _rich_camera(cameras, keys[vid], vid, cameras_path))
        for vid in names
    ]


# ---------------------------------------------------------------- all datasets


def list_sequences(
    dataset: str, root: str | Path, *, annotations: dict | None = None, only: Sequence[str] | None = None
) -> list[HumanSequence]:
    """The sequences of `dataset` under `root` in the official order (3dpw: sorted names; emdb: the official
    list; rich: the labels' order), restricted to `only` if given. 3dpw needs `annotations` (the prepared or
    official annotation dict)."""
    root = Path(root)
    if dataset == "3dpw":
        return _list_3dpw(root, annotations, only)
    if dataset in ("emdb1", "emdb2"):
        return _list_emdb(int(dataset[-1]), root, only)
    if dataset == "rich":
        return _list_rich(root, only)
    raise HumanDataError(f"{dataset}: unknown human dataset (one of {', '.join(DATASETS)})")
