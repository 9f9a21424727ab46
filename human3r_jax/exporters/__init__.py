"""`human3r-jax export`: a reconstruction folder → the formats other tools read (no model run).

    folder.py   load(OUT_DIR) → Reconstruction: the frames on disk, read one at a time (partial runs too)
    colmap.py   COLMAP model (cameras, images, points3D; text or binary), optionally the frames as images
    ply.py      the fused confident point cloud (binary PLY), or one per frame
    gltf.py     one .glb: every track as an animated SMPL-X body, the camera path, the point cloud
    bvh.py      one BVH per track: the SMPL-X skeleton, world root motion, joint rotations
    jsonl.py    JSON Lines, one frame per line: cameras, people, world joints, SMPL-X parameters
    tracks.py   each track's frames, parameters and skeleton (for glTF and BVH)

Each format module has `write(rec, dest, **options) -> summary`; `export` picks the destination (by
default inside the reconstruction folder, under the name in FORMATS), writes under a temporary name and
renames, so a file or folder at the destination is always complete, and never replaces what it did not
write.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

from human3r_jax import outputs
from human3r_jax.exporters.folder import ExportError, Reconstruction, load

EXPORT_MARKER_KIND = "export"  # the marker of an export folder written elsewhere than the default place


@dataclasses.dataclass(frozen=True)
class Format:
    module: str
    default_name: str  # inside the reconstruction folder
    folder: bool  # writes a folder (else one file)
    options: tuple[str, ...]  # the keyword options its `write` takes
    about: str


FORMATS = {
    "colmap": Format(
        "colmap",
        "colmap",
        True,
        ("binary", "input_resolution", "images", "conf_threshold", "points_per_frame", "max_points"),
        "COLMAP model (cameras.txt, images.txt, points3D.txt; --binary: .bin), pinhole cameras, world-to-camera",
    ),
    "ply": Format(
        "ply",
        "points.ply",
        False,
        ("per_frame", "conf_threshold", "points_per_frame", "max_points"),
        "point cloud (PLY)",
    ),
    "gltf": Format(
        "gltf",
        "people.glb",
        False,
        ("smplx", "conf_threshold", "max_points", "fps"),
        "animated SMPL-X bodies, camera path and points (.glb)",
    ),
    "bvh": Format("bvh", "bvh", True, ("smplx", "units", "fps", "body_only"), "one BVH per track id"),
    "json": Format("jsonl", "frames.jsonl", False, ("smplx", "body_only"), "JSON Lines, one frame per line"),
}
# `ply --per-frame` writes a folder of its own name.
PER_FRAME_PLY = "points"


def default_name(fmt: str, options: dict) -> str:
    if fmt == "ply" and options.get("per_frame"):
        return PER_FRAME_PLY
    return FORMATS[fmt].default_name


# Export files carry the program's name in their header: a PLY comment, the glb's asset.generator.
_MAGIC = {"ply": b"ply", "gltf": b"glTF"}


def _is_ours(path: Path, fmt: str) -> bool:
    """An earlier export of this program: a folder with its marker, or a file whose header says so."""
    if path.is_dir():
        return outputs.is_marked(path, EXPORT_MARKER_KIND)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if fmt == "json":
        try:
            first = json.loads(head.split(b"\n", 1)[0])
        except ValueError:
            return False
        return isinstance(first, dict) and {"camera", "people"} <= first.keys()
    return fmt in _MAGIC and head.startswith(_MAGIC[fmt]) and b"human3r-jax" in head


def _destination(rec: Reconstruction, fmt: str, out: str | Path | None, overwrite: bool, options: dict) -> Path:
    """Where the export goes: `out`, or the default name inside the reconstruction folder. An existing
    destination is replaced only with `overwrite` and only when this program exported it."""
    dest = Path(out) if out is not None else rec.path / default_name(fmt, options)
    if dest.is_symlink():
        raise ExportError(f"{dest}: a symbolic link; choose another --out")
    real, home = dest.resolve(), rec.path.resolve()
    if real == home or home.is_relative_to(real):
        raise ExportError(f"{dest}: would replace the reconstruction itself; choose another --out")
    if home in real.parents and not (real.parent == home and _export_name(real.name)):
        raise ExportError(
            f"{dest}: inside the reconstruction, where only the default export names go "
            "(omit --out, or choose a path outside it)"
        )
    if dest.exists():
        if not overwrite:
            raise ExportError(f"{dest}: exists; pass --overwrite to replace an earlier export, or choose another --out")
        if not _is_ours(dest, fmt):
            raise ExportError(
                f"{dest}: exists and is not a {fmt} export of human3r-jax, so --overwrite will not replace it; "
                "choose another --out"
            )
    if not dest.parent.is_dir():
        raise ExportError(f"{dest.parent}: no such folder")
    return dest


def _export_name(name: str) -> bool:
    return name in {f.default_name for f in FORMATS.values()} | {PER_FRAME_PLY}


def export(
    folder: str | Path, fmt: str, out: str | Path | None = None, overwrite: bool = False, **options
) -> tuple[Path, str]:
    """Export the reconstruction in `folder` as `fmt` (a FORMATS key) → (the path written, its summary line).

    `options` are the format's keyword options (FORMATS[fmt].options; None and False are left to its
    defaults). A partial reconstruction is exported with the frames it has, and a line on stderr says so."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown; known formats: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    foreign = sorted(set(given) - set(spec.options))
    if foreign:
        raise ExportError(f"--{foreign[0].replace('_', '-')} does not apply to --format {fmt}")
    rec = load(folder)
    dest = _destination(rec, fmt, out, overwrite, given)
    note = rec.note()
    if note:
        print(note, file=sys.stderr)
    writer = importlib.import_module(f"human3r_jax.exporters.{spec.module}")
    tmp = dest.with_name(f".{dest.name}.tmp")
    _remove(tmp)
    try:
        summary = writer.write(rec, tmp, **given)
        if tmp.is_dir():
            outputs.mark(tmp, EXPORT_MARKER_KIND)
            outputs.replace_dir(tmp, dest)
        else:
            os.replace(tmp, dest)
    finally:
        _remove(tmp)
    return dest, summary


def _remove(path: Path) -> None:
    """Our temporary file or folder, if a run left it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["FORMATS", "ExportError", "Reconstruction", "export", "load"]
