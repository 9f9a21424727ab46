"""PLY point cloud: the reconstruction's confident points with their colours, binary little-endian.

    element vertex P
    property float x, y, z            world position (float32)
    property uchar red, green, blue   the point's colour in the model's input image

The world is the reconstruction's: the first camera's frame with OpenCV axes (x right, y down, z forward,
so "up" is −y), in metres; a comment line of the header says so (another says the file is human3r-jax's).

Options:
    per_frame         DEST is a folder of one file per frame, NNNNNN.ply (the frame's index in the
                      reconstruction), each holding every point of that frame with conf above the
                      threshold (a frame is at most a few hundred thousand points: not subsampled, and
                      points_per_frame and max_points do not apply); default False: DEST is one file, the
                      fused cloud (`Reconstruction.points`)
    conf_threshold    keep points with conf above it (default 1.5)
    points_per_frame  fused cloud: at most this many points from each frame (default 50,000)
    max_points        fused cloud: thinned by half whenever it passes this (default 2,000,000)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from human3r_jax.exporters.folder import Reconstruction

GENERATOR = "written by human3r-jax export"  # how `export --overwrite` recognises its own files
WORLD = "world: the first camera's frame, OpenCV axes (x right, y down, z forward), metres"
_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write(
    rec: Reconstruction,
    dest: Path,
    per_frame: bool = False,
    conf_threshold: float = 1.5,
    points_per_frame: int = 50_000,
    max_points: int = 2_000_000,
) -> str:
    """Write the cloud to the new file `dest` (or, per frame, the new folder `dest`); → the summary line."""
    dest = Path(dest)
    if not per_frame:
        pts = rec.points(conf_threshold, points_per_frame, max_points)
        write_ply(dest, pts["xyz"], pts["rgb"])
        return f"PLY point cloud: {len(pts['xyz']):,} points"
    dest.mkdir()
    total = 0
    for i, f in enumerate(rec.frames()):
        keep = f["conf"] > conf_threshold
        write_ply(dest / f"{i:06d}.ply", f["pts3d_world"][keep], f["image"][keep])
        total += int(keep.sum())
    return f"PLY point clouds: {rec.n_frames} frames, {total:,} points"


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """xyz [P, 3] (world, metres), rgb [P, 3] uint8 → a binary little-endian PLY at `path`."""
    vertex = np.empty(len(xyz), _VERTEX)
    for n, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, n]
    for n, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, n]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<", comments=[GENERATOR, WORLD])
    ply.write(str(path))
