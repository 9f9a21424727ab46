"""BEDLAM preprocessing: the raw release → per-frame files the training dataset reads.

Input (`raw_root`, one folder per scene as extracted from the BEDLAM release)::

    <scene>/be_seq.csv                               rows whose Comment holds `sequence_name=<seq>;…`
    <scene>/ground_truth/camera/<seq>_camera.csv     one row per 30-fps frame: x, y, z (cm), yaw, pitch,
                                                     roll (degrees, Unreal), focal_length (mm)
    <scene>/png/<seq>/<frame>.png                    1280×720 renders
    <scene>/depth/<seq>/<frame>_depth.exr            channel 'Depth', centimetres
    <scene>/masks/<seq>/<frame>_env.png              environment mask (255 = background)

and the SMPL-X labels (`labels_root`): `<scene>_6fps.npz`, else `<scene>_30fps.npz`, directly in
`labels_root` or in one of its immediate sub-folders (`all_npz_12_training/`, `all_npz_12_validation/`).
Keys read: `imgname` [N] ("<seq>/<frame>.png"), `pose_cam` [N,165] (SMPL-X axis-angle in the camera
frame), `shape` [N,11], `trans_cam` [N,3], `cam_ext` [N,4,4]; one row per person and frame.

Output (`out_root`), one folder per sequence, in the preprocessed layout of `data/schema.py`::

    {Training,Test}/<scene>_<seq>/rgb/<frame>.png    the render, bytes copied
                                  depth/<frame>.npy  [H,W] float32 metres
                                  mask/<frame>.png   [H,W] uint8, 255 − env mask (255 = humans)
                                  cam/<frame>.npz    schema.CAMERA_SPEC: intrinsics [3,3], pose [4,4]
                                                     camera-to-world, OpenCV axes (x right, y down,
                                                     z forward), metres; float32
                                  smpl/<frame>.npz   schema.label_spec(P): P persons (P may be 0), float32
                                                     [P, *shape] per key of schema.SMPL_KEYS (axis-angle
                                                     poses, 11 betas, transl in the camera frame, metres)

`<frame>` is the render's file stem (e.g. `seq_000000_0000`). This is the official
`datasets_preprocess/preprocess_bedlam.py` layout except that the SMPL-X labels are `.npz` (no pickle)
instead of `.pkl` lists of dicts; the bodies are always the neutral SMPL-X model, so no gender is stored.

What is kept, as in the official script: every 5th render of a sequence (30 → 6 fps) that has a
label; scenes with HDRI backgrounds and "closeup" scenes are dropped, and so are sequences without
labels or without a camera file. Three scenes form the Test split, the rest Training.

Each sequence is written into a hidden temporary folder next to its destination and renamed into
place once complete, so an interrupted run leaves no half-written sequence; a re-run skips the
sequences already there.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import glob
import logging
import math
import multiprocessing
import os
import shutil
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
from tqdm import tqdm

from human3r_jax import outputs
from human3r_jax.argtypes import positive_int
from human3r_jax.data.bedlam.index import HDRI_SCENES
from human3r_jax.data.schema import NUM_BETAS, POSE_KEYS, SMPL_KEYS, SUBFOLDERS
from human3r_jax.errors import Human3rError

log = logging.getLogger(__name__)

FRAME_STRIDE = 5
SENSOR_MM = (36.0, 20.25)
# The official script takes the principal point and focal scale from these constants, not from the
# image: all kept scenes are rendered at 1280×720 (the portrait "closeup" ones are dropped).
RENDER_WH = (1280, 720)

TEST_SCENES = frozenset(
    {
        "20221018_1_250_batch01hand_zoom_suburb_b",
        "20221018_3_250_batch01hand_orbit_archVizUI3_time15",
        "20221019_3-8_250_highbmihand_orbit_stadium",
    }
)

# `pose_cam` holds the SMPL-X poses of schema.POSE_KEYS concatenated in that (joint) order: 55 × 3 values.
POSE_SIZE = sum(math.prod(SMPL_KEYS[k][1]) for k in POSE_KEYS)
LABEL_SHAPES = {"imgname": (), "pose_cam": (POSE_SIZE,), "shape": (NUM_BETAS,), "trans_cam": (3,), "cam_ext": (4, 4)}
CAMERA_COLUMNS = ("x", "y", "z", "yaw", "pitch", "roll", "focal_length")


class BedlamError(Human3rError):
    """A malformed or unreadable file of the BEDLAM release; the message names the file."""


def intrinsics(focal_mm: float) -> np.ndarray:
    """[3,3] float64 pinhole matrix of the 1280×720 render for a focal length in mm."""
    (w, h), (sw, sh) = RENDER_WH, SENSOR_MM
    return np.array([[focal_mm / sw * w, 0.0, w / 2], [0.0, focal_mm / sh * h, h / 2], [0.0, 0.0, 1.0]])


def _rot(axis: int, deg: float) -> np.ndarray:
    """Right-handed rotation by `deg` degrees about coordinate axis 0, 1 or 2."""
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# Unreal world axes (x forward, y right, z up; left-handed) → OpenCV-style world axes
# (x = Unreal y, y = −Unreal z, z = Unreal x). Its determinant is −1: it also fixes the handedness.
UNREAL_TO_OPENCV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def camera_to_world(x: float, y: float, z: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[4,4] float64 camera-to-world pose, OpenCV axes, metres, from an Unreal camera.

    x, y, z: camera position in cm (Unreal world); yaw, pitch, roll: degrees. In Unreal a positive yaw
    turns right, a positive pitch looks up and a positive roll lowers the camera's right side; as
    right-handed matrices on Unreal coordinates that is Rz(yaw)·Ry(−pitch)·Rx(−roll) (yaw applied first,
    about the world's up axis). With all angles 0 the camera looks along Unreal +x, i.e. its OpenCV axes
    are the world's.
    """
    r_unreal = _rot(2, yaw) @ _rot(1, -pitch) @ _rot(0, -roll)
    pose = np.eye(4)
    pose[:3, :3] = UNREAL_TO_OPENCV @ r_unreal @ UNREAL_TO_OPENCV.T
    pose[:3, 3] = UNREAL_TO_OPENCV @ np.array([x, y, z]) / 100.0
    return pose


# --------------------------------------------------------------------------------------------
# Reading the release


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BedlamError(f"{path}: cannot read the CSV ({e})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise BedlamError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
    return rows


def read_sequence_names(path: Path) -> list[str]:
    """The sequence names of a scene's be_seq.csv: `sequence_name=<seq>` in the Comment column."""
    names = []
    for line, row in enumerate(_read_csv(path, ("Comment",)), start=2):
        comment = row["Comment"] or ""
        if "sequence_name" not in comment:
            continue  # body rows of a sequence
        fields = {}
        for item in comment.split(";"):
            key, _, value = item.partition("=")
            fields[key.strip()] = value.strip()
        name = fields.get("sequence_name", "")
        if not name:
            raise BedlamError(f"{path}, line {line}: malformed Comment {comment!r} (expected sequence_name=<seq>;…)")
        if name in names:
            raise BedlamError(f"{path}, line {line}: sequence {name!r} listed twice")
        names.append(name)
    return names


def read_camera_csv(path: Path) -> np.ndarray:
    """[F,7] float64 per-frame x, y, z, yaw, pitch, roll, focal_length of a `<seq>_camera.csv`."""
    out = []
    for line, row in enumerate(_read_csv(path, CAMERA_COLUMNS), start=2):
        values = []
        for c in CAMERA_COLUMNS:
            try:
                values.append(float(row[c]))
            except (TypeError, ValueError):
                raise BedlamError(f"{path}, line {line}: column {c} is {row[c]!r}, not a number") from None
        out.append(values)
    return np.array(out, dtype=np.float64).reshape(-1, len(CAMERA_COLUMNS))


def find_labels(labels_root: Path, scene: str) -> Path | None:
    """`<scene>_6fps.npz` (preferred) or `<scene>_30fps.npz` in labels_root or an immediate sub-folder."""
    folders = [labels_root] + sorted(p for p in labels_root.iterdir() if p.is_dir())
    for suffix in ("_6fps.npz", "_30fps.npz"):
        hits = [d / (scene + suffix) for d in folders if (d / (scene + suffix)).is_file()]
        if len(hits) > 1:
            raise BedlamError(f"labels for {scene} found twice: {', '.join(map(str, hits))}")
        if hits:
            return hits[0]
    return None


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """The label arrays used (see LABEL_SHAPES), checked for presence and shape."""
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise BedlamError(f"{path}: cannot read the npz ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BedlamError(f"{path}: not an npz archive")
    with z:
        missing = [k for k in LABEL_SHAPES if k not in z.files]
        if missing:
            raise BedlamError(f"{path}: missing key(s) {', '.join(missing)} (has: {', '.join(z.files)})")
        labels = {}
        for k in LABEL_SHAPES:
            try:
                labels[k] = z[k]
            except (OSError, ValueError, zipfile.BadZipFile) as e:  # ValueError: an object array (pickle)
                raise BedlamError(f"{path}: cannot read key {k} ({e})") from None
    n = len(labels["imgname"])
    for k, shape in LABEL_SHAPES.items():
        if labels[k].shape != (n, *shape):
            raise BedlamError(f"{path}: key {k} has shape {labels[k].shape}, expected {(n, *shape)}")
    if labels["imgname"].dtype.kind != "U":
        raise BedlamError(f"{path}: key imgname has dtype {labels['imgname'].dtype}, expected strings")
    return labels


def read_depth(path: Path) -> np.ndarray:
    """[H,W] float32 metres from a BEDLAM depth EXR (channel 'Depth', centimetres)."""
    try:
        import OpenEXR
    except ImportError:
        raise ImportError("reading BEDLAM depth needs the OpenEXR package: pip install human3r-jax[train]") from None
    if not path.is_file():
        raise BedlamError(f"{path}: no such file")
    try:
        channels = OpenEXR.File(str(path)).parts[0].channels
        depth = np.asarray(channels["Depth"].pixels) if "Depth" in channels else None
    except (RuntimeError, OSError, ValueError, IndexError) as e:
        raise BedlamError(f"{path}: cannot read the EXR ({e})") from None
    if depth is None:
        raise BedlamError(f"{path}: no 'Depth' channel (has: {', '.join(channels)})")
    if depth.ndim != 2:
        raise BedlamError(f"{path}: 'Depth' channel has shape {depth.shape}, expected [H,W]")
    return depth.astype(np.float32) / np.float32(100.0)


@contextlib.contextmanager
def _image_errors(path: Path):
    try:
        yield
    except FileNotFoundError:
        raise BedlamError(f"{path}: no such file") from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BedlamError(f"{path}: cannot read the image ({e})") from None


def _check_image(path: Path) -> tuple[int, int]:
    """(H, W) of an image whose chunks pass PIL's integrity check (no decoding)."""
    with _image_errors(path), PIL.Image.open(path) as im:
        im.verify()
        return im.size[1], im.size[0]


def _read_gray(path: Path) -> np.ndarray:
    """[H,W] uint8 grey levels of an image, as OpenCV's 8-bit greyscale read: a 16-bit image keeps
    its high byte (PIL's own conversion would clip it at 255)."""
    with _image_errors(path), PIL.Image.open(path) as im:
        if im.mode.startswith("I"):
            return (np.asarray(im, np.uint32) >> 8).astype(np.uint8)
        return np.asarray(im.convert("L"))


# --------------------------------------------------------------------------------------------
# Planning (main process) and writing (one sequence per task)


@dataclass(frozen=True)
class Frame:
    name: str  # file stem of the render
    intrinsics: np.ndarray  # [3,3] float32
    pose: np.ndarray  # [4,4] float32 camera-to-world
    smpl: dict[str, np.ndarray]  # the smpl/<frame>.npz arrays, [P,…] float32


@dataclass(frozen=True)
class Sequence:
    scene: str
    seq: str
    split: str  # "Training" or "Test"
    scene_dir: Path
    frames: tuple[Frame, ...]

    @property
    def name(self) -> str:
        return f"{self.scene}_{self.seq}"


def _persons(labels: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    """The smpl/<frame>.npz arrays (schema.label_spec(P)) of the label rows of one frame (P = len(rows))."""
    pose = labels["pose_cam"][rows].astype(np.float32)
    out, start = {}, 0
    for key in POSE_KEYS:  # consecutive slices of pose_cam
        file_key, shape = SMPL_KEYS[key]
        size = math.prod(shape)
        out[file_key] = pose[:, start : start + size].reshape(len(rows), *shape)
        start += size
    out["smplx_shape"] = labels["shape"][rows].astype(np.float32)
    # The camera-frame translation the official dataset uses: trans_cam plus cam_ext's translation.
    out["smplx_transl"] = (labels["trans_cam"][rows] + labels["cam_ext"][rows][:, :3, 3]).astype(np.float32)
    return out


def _plan_sequence(
    scene_dir: Path,
    seq: str,
    labels: dict[str, np.ndarray],
    rows_by_image: dict[str, list[int]],
    skipped: collections.Counter,
) -> tuple[Frame, ...] | None:
    cam_csv = scene_dir / "ground_truth" / "camera" / f"{seq}_camera.csv"
    if not cam_csv.is_file():
        log.warning("skipping %s/%s: no camera file %s", scene_dir.name, seq, cam_csv)
        skipped["sequence_without_camera_csv"] += 1
        return None
    png_dir = scene_dir / "png" / seq
    if not png_dir.is_dir():
        raise BedlamError(f"{png_dir}: no such folder (sequence {seq} is listed in be_seq.csv and labelled)")
    pngs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(str(png_dir)), "*.png")))
    camera = read_camera_csv(cam_csv)
    frames = []
    for index in range(0, len(pngs), FRAME_STRIDE):
        rows = rows_by_image.get(f"{seq}/{pngs[index]}")
        if rows is None:
            skipped["frame_without_labels"] += 1
            continue
        # The camera file has one row per render, in the renders' sorted order.
        if index >= len(camera):
            raise BedlamError(f"{cam_csv}: {len(camera)} rows, but {png_dir} has a render #{index} ({pngs[index]})")
        x, y, z, yaw, pitch, roll, focal = camera[index]
        frames.append(
            Frame(
                name=pngs[index][: -len(".png")],
                intrinsics=intrinsics(focal).astype(np.float32),
                pose=camera_to_world(x, y, z, yaw, pitch, roll).astype(np.float32),
                smpl=_persons(labels, rows),
            )
        )
    if not frames:
        log.warning("skipping %s/%s: none of its kept renders is labelled", scene_dir.name, seq)
        skipped["sequence_without_labelled_frames"] += 1
        return None
    return tuple(frames)


def plan(
    raw_root: Path, labels_root: Path, limit_sequences: int | None = None, progress: bool = False
) -> tuple[list[Sequence], collections.Counter]:
    """The sequences to write, in scene then be_seq.csv order, and the skip counts by reason."""
    for root in (raw_root, labels_root):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
    skipped: collections.Counter = collections.Counter()
    sequences: list[Sequence] = []
    scenes = sorted(p.name for p in raw_root.iterdir() if p.is_dir())
    for scene in tqdm(scenes, desc="BEDLAM scenes", unit="scene", disable=not progress):
        if limit_sequences is not None and len(sequences) >= limit_sequences:
            break
        if scene in HDRI_SCENES or "closeup" in scene:
            log.info("skipping %s: %s scene", scene, "HDRI" if scene in HDRI_SCENES else "closeup")
            skipped["hdri_scene" if scene in HDRI_SCENES else "closeup_scene"] += 1
            continue
        scene_dir = raw_root / scene
        be_seq = scene_dir / "be_seq.csv"
        if not be_seq.is_file():
            log.warning("skipping %s: no %s", scene, be_seq)
            skipped["scene_without_be_seq"] += 1
            continue
        label_path = find_labels(labels_root, scene)
        if label_path is None:
            log.warning("skipping %s: no %s_6fps.npz or %s_30fps.npz under %s", scene, scene, scene, labels_root)
            skipped["scene_without_labels"] += 1
            continue
        labels = read_labels(label_path)
        rows_by_image: dict[str, list[int]] = collections.defaultdict(list)
        for i, name in enumerate(labels["imgname"].tolist()):
            rows_by_image[name].append(i)
        labelled_seqs = {name.partition("/")[0] for name in rows_by_image if "/" in name}
        for seq in read_sequence_names(be_seq):
            if limit_sequences is not None and len(sequences) >= limit_sequences:
                break
            if seq not in labelled_seqs:
                log.warning("skipping %s/%s: no labels in %s", scene, seq, label_path)
                skipped["sequence_without_labels"] += 1
                continue
            frames = _plan_sequence(scene_dir, seq, labels, rows_by_image, skipped)
            if frames is not None:
                sequences.append(
                    Sequence(scene, seq, "Test" if scene in TEST_SCENES else "Training", scene_dir, frames)
                )
    return sequences, skipped


def check_output_root(out_root: Path, raw_root: Path, labels_root: Path) -> None:
    """The output root must be a folder (or absent), and writing it must not touch the inputs: it may
    be neither input folder nor lie in the release (it would become one of its scenes), and no input
    may lie in its split folders."""
    if out_root.exists() and not out_root.is_dir():
        raise BedlamError(f"{out_root}: exists and is not a folder; choose another --out")
    out = out_root.resolve()
    for inp in (raw_root, labels_root):
        real = inp.resolve()
        if out == real or (inp is raw_root and real in out.parents):
            raise BedlamError(f"--out {out_root} is or lies in the input folder {inp}; choose another output folder")
        if any(real == d or d in real.parents for d in (out / "Training", out / "Test")):
            raise BedlamError(f"--out {out_root}: its Training/Test folders would hold the input {inp}")


def write_sequence(sequence: Sequence, out_root: Path) -> tuple[int, int]:
    """Write one sequence atomically; (frames written, frames whose env mask was missing)."""
    dest = out_root / sequence.split / sequence.name
    prefix = f".{sequence.name}.partial-"
    for stale in dest.parent.glob(glob.escape(prefix) + "*"):
        outputs.remove_own(stale, "bedlam-sequence")  # left by a run that was killed
    tmp = outputs.make_temp_dir(dest.parent, prefix)
    outputs.mark(tmp, "bedlam-sequence")  # so that a later run may remove it if this one is killed
    missing_masks = 0
    try:
        for sub in SUBFOLDERS:
            (tmp / sub).mkdir()
        for f in sequence.frames:
            rgb = sequence.scene_dir / "png" / sequence.seq / f"{f.name}.png"
            depth_path = sequence.scene_dir / "depth" / sequence.seq / f"{f.name}_depth.exr"
            mask_path = sequence.scene_dir / "masks" / sequence.seq / f"{f.name}_env.png"
            hw = _check_image(rgb)
            depth = read_depth(depth_path)
            if depth.shape != hw:
                raise BedlamError(f"{depth_path}: depth is {depth.shape}, but {rgb} is {hw}")
            if mask_path.exists():
                env = _read_gray(mask_path)
                if env.shape != hw:
                    raise BedlamError(f"{mask_path}: mask is {env.shape}, but {rgb} is {hw}")
                mask = 255 - env
            else:
                # The official script treats a missing env mask as "no humans".
                missing_masks += 1
                mask = np.zeros(hw, np.uint8)
            shutil.copyfile(rgb, tmp / "rgb" / f"{f.name}.png")
            np.save(tmp / "depth" / f"{f.name}.npy", depth)
            PIL.Image.fromarray(mask, mode="L").save(tmp / "mask" / f"{f.name}.png")
            np.savez(tmp / "cam" / f"{f.name}.npz", intrinsics=f.intrinsics, pose=f.pose)
            np.savez(tmp / "smpl" / f"{f.name}.npz", **f.smpl)
        (tmp / outputs.MARKER).unlink()  # it marks a sequence in progress; the finished layout is the official one
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(sequence.frames), missing_masks


def preprocess_bedlam(
    raw_root, labels_root, out_root, *, workers: int = 1, progress: bool = True, limit_sequences: int | None = None
) -> dict:
    """Preprocess the BEDLAM release (see the module docstring for the layouts).

    raw_root: the extracted scene folders; labels_root: the SMPL-X label npz files; out_root: the
    output. workers > 1 writes that many sequences in parallel (separate processes); the output does not
    depend on it. limit_sequences: only the first that many sequences (scene, then be_seq.csv order).

    Returns the counts {"sequences_written", "frames_written", "sequences_already_done",
    "frames_missing_mask", "skipped": {reason: count}}; reasons count scenes (hdri_scene, closeup_scene,
    scene_without_be_seq, scene_without_labels), sequences (sequence_without_labels,
    sequence_without_camera_csv, sequence_without_labelled_frames) or kept renders
    (frame_without_labels). Raises BedlamError (naming the file) on malformed or unreadable input.
    """
    if workers < 1:
        raise BedlamError(f"--workers must be at least 1, got {workers}")
    if limit_sequences is not None and limit_sequences < 1:
        raise BedlamError(f"--limit must be at least 1, got {limit_sequences}")
    raw_root, labels_root, out_root = Path(raw_root), Path(labels_root), Path(out_root)
    check_output_root(out_root, raw_root, labels_root)
    sequences, skipped = plan(raw_root, labels_root, limit_sequences, progress)
    todo = [s for s in sequences if not (out_root / s.split / s.name).is_dir()]
    summary = {
        "sequences_written": 0,
        "frames_written": 0,
        "sequences_already_done": len(sequences) - len(todo),
        "frames_missing_mask": 0,
        "skipped": dict(sorted(skipped.items())),
    }
    bar = tqdm(total=len(todo), desc="BEDLAM sequences", unit="seq", disable=not progress)

    def record(sequence: Sequence, result: tuple[int, int]) -> None:
        frames, missing = result
        if missing:
            log.warning("%s: %d frame(s) without an env mask, written with an empty human mask", sequence.name, missing)
        summary["sequences_written"] += 1
        summary["frames_written"] += frames
        summary["frames_missing_mask"] += missing
        bar.update()

    try:
        if workers == 1:
            for s in todo:
                record(s, write_sequence(s, out_root))
        else:
            # spawn: the parent may hold threads (JAX, TensorFlow) that make fork unsafe.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(write_sequence, s, out_root): s for s in todo}
                try:
                    for fut in as_completed(futures):
                        record(futures[fut], fut.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return summary


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", type=Path, required=True, help="folder of the extracted BEDLAM scenes")
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="folder of the SMPL-X labels <scene>_6fps.npz / <scene>_30fps.npz (or its parent)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (gets Training/ and Test/)")
    parser.add_argument("--workers", type=positive_int, default=1, help="sequences written in parallel (default 1)")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N sequences")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    s = preprocess_bedlam(
        args.raw, args.labels, args.out, workers=args.workers, progress=not args.quiet, limit_sequences=args.limit
    )
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
    print(
        f"wrote {s['sequences_written']} sequences ({s['frames_written']} frames) to {args.out}; "
        f"{s['sequences_already_done']} already there; {s['frames_missing_mask']} frames without an env mask; "
        f"skipped: {skipped}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Preprocess the BEDLAM release for Human3R training.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
