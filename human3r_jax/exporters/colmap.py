"""COLMAP sparse model: a reconstruction as cameras, posed images and 3-D points with their 2-D observations.

    DEST/cameras.txt   one PINHOLE camera per frame: CAMERA_ID MODEL WIDTH HEIGHT fx fy cx cy
    DEST/images.txt    per frame: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then its POINTS2D as (X, Y, POINT3D_ID)
    DEST/points3D.txt  POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)
    DEST/images/       with `images`: every frame's image as NAME (000000.png, ...)

(cameras.bin, images.bin, points3D.bin with `binary`, in COLMAP's binary layout: little-endian, uint64
counts, uint32 camera and image ids, uint64 point ids, float64 values, null-terminated names.)

Conventions. Poses are world-to-camera (R_w2c as a unit quaternion w, x, y, z, and t_w2c), the inverse of
the frames' c2w; COLMAP's camera axes are OpenCV's (x right, y down, z forward), so no axis change. The
world is the reconstruction's: the first camera's frame, metres. Pixels: COLMAP puts the centre of the
top-left pixel at (0.5, 0.5), the frame files' K at (0, 0), so cx_colmap = cx + 0.5, cy_colmap = cy + 0.5,
and an observation at column x, row y is written at (x + 0.5, y + 0.5). IMAGE_ID = CAMERA_ID = frame + 1;
NAME = f"{frame:06d}.png" whether or not the images are written.

Points: the fused confident cloud (`Reconstruction.points`); each point has a track of one observation,
the pixel of its own frame it comes from, listed in that image's POINTS2D, so the 2-D/3-D correspondences
are consistent (the point projects onto its observation). ERROR is -1, COLMAP's "not computed" (what its
Point3D holds before any reprojection error is measured; 0 would claim a perfect fit).

Options:
    binary            write the .bin files instead of the .txt ones (default False)
    input_resolution  cameras, observations and images at the input frames' resolution (meta.json
                      input_size) instead of the model's: K through `data.images.intrinsics_to_input`
                      (default False)
    images            also write the frames' images under images/ (default False); at the input
                      resolution each is mapped back through the model crop (the part the crop cut off
                      stays black), so its pixels sit where the cameras say
    conf_threshold    keep points with conf above it (default 1.5)
    points_per_frame  at most this many points from each frame (default 5000)
    max_points        the cloud is thinned by half whenever it passes this (default 200,000)

K is written as the frames hold it: an untrained model's focal can be 0 (the summary counts such cameras;
COLMAP flags them as bogus).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from human3r_jax.data.images import intrinsics_to_input, model_crop
from human3r_jax.exporters.folder import ExportError, Reconstruction
from human3r_jax.geometry import matrix_to_quat

PINHOLE = 1  # COLMAP's model id
UNKNOWN_ERROR = -1.0

_CAMERA = np.dtype([("id", "<u4"), ("model", "<i4"), ("width", "<u8"), ("height", "<u8"), ("params", "<f8", 4)])
_IMAGE = np.dtype([("id", "<u4"), ("q", "<f8", 4), ("t", "<f8", 3), ("camera", "<u4")])
_POINT2D = np.dtype([("xy", "<f8", 2), ("point3d", "<u8")])
_POINT3D = np.dtype(
    [
        ("id", "<u8"),
        ("xyz", "<f8", 3),
        ("rgb", "u1", 3),
        ("error", "<f8"),
        ("track_length", "<u8"),
        ("image", "<u4"),
        ("point2d", "<u4"),
    ]
)


def image_name(i: int) -> str:
    return f"{i:06d}.png"


def write(
    rec: Reconstruction,
    dest: Path,
    binary: bool = False,
    input_resolution: bool = False,
    images: bool = False,
    conf_threshold: float = 1.5,
    points_per_frame: int = 5000,
    max_points: int = 200_000,
) -> str:
    """Write the model into the new folder `dest`; → the summary line."""
    if input_resolution and rec.input_size is None:
        raise ExportError(
            f"{rec.path / 'meta.json'}: no input_size (written by an older version); "
            "--input-resolution needs it: export at the model resolution instead"
        )
    to_input = _InputMapping(rec) if input_resolution else None
    dest = Path(dest)
    dest.mkdir()
    if images:
        (dest / "images").mkdir()
    cameras = np.zeros(rec.n_frames, _CAMERA)
    poses = np.zeros(rec.n_frames, _IMAGE)
    for i, f in enumerate(rec.frames()):
        k = np.asarray(f["intrinsics"], np.float64)
        (w, h), k = (rec.hw[::-1], k) if to_input is None else (rec.input_size, to_input.intrinsics(k))
        cameras[i] = (i + 1, PINHOLE, w, h, (k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5))
        poses[i] = (i + 1, *_world_to_camera(f["c2w"]), i + 1)
        if images:
            image = Image.fromarray(f["image"])
            (image if to_input is None else to_input.image(image)).save(dest / "images" / image_name(i))
    pts = rec.points(conf_threshold, points_per_frame, max_points)
    xy = pts["pixel"] + 0.5 if to_input is None else to_input.pixels(pts["pixel"])
    points = np.zeros(len(pts["xyz"]), _POINT3D)
    points["id"] = np.arange(1, len(points) + 1)
    points["xyz"], points["rgb"], points["error"], points["track_length"] = pts["xyz"], pts["rgb"], UNKNOWN_ERROR, 1
    points["point2d"], in_frame = _tracks(pts["frame"], rec.n_frames)
    points["image"] = pts["frame"] + 1
    observations = [_points2d(xy[j], points["id"][j]) for j in in_frame]
    (_write_binary if binary else _write_text)(dest, cameras, poses, observations, points)
    no_focal = int(np.sum(~(cameras["params"][:, :2] > 0).all(1)))
    return (
        f"COLMAP model: {len(cameras)} cameras, {len(poses)} images, {len(points):,} points "
        f"({'binary' if binary else 'text'}, {'input' if input_resolution else 'model'} resolution"
        f"{', with images/' if images else ''})"
        + (f"; {no_focal} cameras have no focal (an untrained model?)" if no_focal else "")
    )


class _InputMapping:
    """The model input ↔ input frames mapping of `data.images.model_crop`: a raw pixel centre u maps to
    the model pixel (u + 0.5)·sx − 0.5 − x0, i.e. COLMAP coordinates U = u + 0.5 and X = x + 0.5 are
    related by X = U·sx − x0."""

    def __init__(self, rec: Reconstruction):
        self.size = rec.input_size
        self.model_size = rec.size
        (self.sx, self.sy), (self.x0, self.y0), _ = model_crop(*self.size, rec.size)

    def intrinsics(self, k: np.ndarray) -> np.ndarray:
        return intrinsics_to_input(k, *self.size, self.model_size)

    def pixels(self, pixel: np.ndarray) -> np.ndarray:
        """Model pixels [P, 2] (column, row) → COLMAP coordinates [P, 2] in the input frames."""
        return (pixel + 0.5 + np.array([self.x0, self.y0])) / np.array([self.sx, self.sy])

    def image(self, image: Image.Image) -> Image.Image:
        # PIL's affine transform maps each output point (U, V) to the input point (sx·U − x0, sy·V − y0)
        # in the same continuous coordinates (pixel centres at .5) as COLMAP's.
        coeffs = (self.sx, 0.0, -self.x0, 0.0, self.sy, -self.y0)
        return image.transform(self.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _world_to_camera(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c2w [4, 4] → (q [4] (w, x, y, z) of R_w2c, t_w2c [3])."""
    r = np.asarray(c2w[:3, :3], np.float64).T
    q = np.asarray(matrix_to_quat(r.astype(np.float32)), np.float64)
    return q, -r @ np.asarray(c2w[:3, 3], np.float64)


def _tracks(frame: np.ndarray, n_frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The points' frames [P] → each point's index among its frame's points (its POINT2D_IDX) [P], and per
    frame the indices of its points in that order."""
    order = np.argsort(frame, kind="stable")
    counts = np.bincount(frame, minlength=n_frames)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(frame), np.int64)
    rank[order] = np.arange(len(frame)) - starts[frame[order]]
    return rank, np.split(order, starts[1:])


def _points2d(xy: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """An image's POINTS2D [n]: its observations xy [n, 2] (COLMAP coordinates) of the points `ids` [n]."""
    out = np.zeros(len(ids), _POINT2D)
    out["xy"], out["point3d"] = xy, ids
    return out


def _write_text(dest: Path, cameras, poses, observations, points) -> None:
    g = "{:.17g}".format  # float64 values read back exactly (the binary model's)
    n_obs = sum(len(o) for o in observations)
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    lines += [f"{c['id']} PINHOLE {c['width']} {c['height']} " + " ".join(map(g, c["params"])) for c in cameras]
    (dest / "cameras.txt").write_text("\n".join(lines) + "\n")

    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(poses)}, mean observations per image: {n_obs / max(len(poses), 1):g}",
    ]
    for i, (p, obs) in enumerate(zip(poses, observations)):
        pose = " ".join(map(g, [*p["q"], *p["t"]]))
        lines.append(f"{p['id']} {pose} {p['camera']} {image_name(i)}")
        xy, ids = obs["xy"].tolist(), obs["point3d"].tolist()
        lines.append(" ".join(f"{g(x)} {g(y)} {pid}" for (x, y), pid in zip(xy, ids)))
    (dest / "images.txt").write_text("\n".join(lines) + "\n")

    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points)}, mean track length: 1",
    ]
    columns = (points[k].tolist() for k in ("id", "xyz", "rgb", "image", "point2d"))
    lines += [
        f"{pid} {g(x)} {g(y)} {g(z)} {r} {gr} {b} {UNKNOWN_ERROR:g} {image} {idx}"
        for pid, (x, y, z), (r, gr, b), image, idx in zip(*columns)
    ]
    (dest / "points3D.txt").write_text("\n".join(lines) + "\n")


def _write_binary(dest: Path, cameras, poses, observations, points) -> None:
    def count(n: int) -> bytes:
        return n.to_bytes(8, "little")

    (dest / "cameras.bin").write_bytes(count(len(cameras)) + cameras.tobytes())
    with open(dest / "images.bin", "wb") as f:
        f.write(count(len(poses)))
        for i, (p, obs) in enumerate(zip(poses, observations)):
            f.write(p.tobytes() + image_name(i).encode() + b"\0" + count(len(obs)) + obs.tobytes())
    (dest / "points3D.bin").write_bytes(count(len(points)) + points.tobytes())
