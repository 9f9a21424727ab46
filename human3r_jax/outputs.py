"""The folders this program writes, and the only ones it will ever replace.

Every output folder (a reconstruction, a converted checkpoint or training export, a preprocessed
BEDLAM sequence) carries a marker file, `.human3r-jax`, naming its kind. `--overwrite` replaces a
folder only if it carries the marker of the same kind, holds nothing but what that kind of output
holds, and neither is nor contains an input of the run; the new output is written beside it and
swapped in once complete, so a failed or interrupted run never costs the previous output.

Folders are created with the permissions the user's umask gives (`tempfile.mkdtemp` alone would
make them private to the owner).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from human3r_jax.errors import Human3rError

MARKER = ".human3r-jax"

# The datasets `human3r-jax evaluate` knows: each one's cache folder sits at the top of an evaluation output.
EVALUATION_DATASETS = (
    "bonn",
    *(f"bonn_{n}" for n in range(50, 501, 50)),
    "kitti",
    "sintel",
    "tum",
    *(f"tum_{n}" for n in (50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000)),
    "scannet",
    "3dpw",
    "emdb1",
    "emdb2",
    "rich",
)

# What each kind of output holds at its top level (anything else is the user's and is never deleted).
CONTENTS = {
    "evaluation": re.compile("metrics\\.json|" + "|".join(EVALUATION_DATASETS)),
    "reconstruction": re.compile(
        r"frames|reconstruction\.npz|trajectory\.tum|scene\.glb|smplx_faces\.npy|meta\.json"
        r"|colmap|points\.ply|points|people\.glb|bvh|frames\.jsonl"  # `human3r-jax export`'s default names
    ),
    "checkpoint": re.compile(r"config\.json|params"),
    "bedlam-sequence": re.compile(r"rgb|depth|mask|cam|smpl"),
}
# Inside sub-folders whose contents are ours to check (orbax's `params/` layout is its own).
_CACHE = re.compile(r"[^/]+\.npz|settings\.json|3dpw_test\.pkl")  # an evaluation's per-dataset folder
SUB_CONTENTS = {
    ("reconstruction", "frames"): re.compile(r"\d{6,}\.npz"),
    ("reconstruction", "colmap"): re.compile(r"(cameras|images|points3D)\.(txt|bin)|images|\.human3r-jax"),
    ("reconstruction", "points"): re.compile(r"\d{6,}\.ply|\.human3r-jax"),
    ("reconstruction", "bvh"): re.compile(r"person_-?\d+\.bvh|\.human3r-jax"),
    **{("evaluation", name): _CACHE for name in EVALUATION_DATASETS},
}
_TEMPORARY = re.compile(r"\..+\.tmp")  # export.atomic_write's in-flight files


class OutputError(Human3rError):
    """An output path that cannot be written or replaced; the message names it."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in `parent`, with the umask's permissions."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        path.chmod(0o777 & ~_umask())
    except OSError as e:
        raise OutputError(f"{parent}: cannot write here ({e.strerror or e})") from None
    return path


def mark(folder: Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"written_by": "human3r-jax", "kind": kind}) + "\n")


# Outputs written before the marker existed are recognised by their own description file.
_LEGACY = {
    "reconstruction": ("meta.json", lambda d: "schema_version" in d and "files" in d),
    "checkpoint": ("config.json", lambda d: d.get("format") == "human3r-jax"),
}


def read_json(path: Path) -> dict:
    """A JSON object file, or {} when it is missing, unreadable or not an object."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def is_marked(folder: Path, kind: str) -> bool:
    """`folder` is an output of `kind` of this program: its marker, or (version 0.1 outputs, which
    have none) its description file (meta.json, config.json)."""
    folder = Path(folder)
    if (folder / MARKER).exists():
        return read_json(folder / MARKER).get("kind") == kind
    name, looks_ours = _LEGACY.get(kind, (None, None))
    return name is not None and looks_ours(read_json(folder / name))


def _foreign_entry(folder: Path, kind: str) -> Path | None:
    """The first entry of `folder` that this kind of output does not write, if any."""
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name == MARKER or _TEMPORARY.fullmatch(name):
            continue
        if not CONTENTS[kind].fullmatch(name):
            return entry
        sub = SUB_CONTENTS.get((kind, name))
        if sub is not None and entry.is_dir():
            for inner in sorted(entry.iterdir()):
                if not (sub.fullmatch(inner.name) or _TEMPORARY.fullmatch(inner.name)):
                    return inner
    return None


def _holds(folder: Path, path: Path) -> bool:
    """`path` is `folder` or lies inside it (after resolving links)."""
    return path == folder or folder in path.parents


def check_output(out: Path, kind: str, overwrite: bool, inputs: Iterable[str | Path] = ()) -> bool:
    """Check that `out` may receive an output of `kind`. → True when an existing output is to be
    replaced (write beside, then `replace_dir`), False when `out` is absent or empty.

    Raises OutputError naming the path: `out` is a file; it is or contains an input; it holds
    something and `overwrite` is off; or, with `overwrite`, it is not this kind of output of
    human3r-jax (no marker) or holds entries such an output does not have.
    """
    out = Path(out)
    real = out.resolve()
    for inp in inputs:
        if inp is not None and _holds(real, Path(inp).resolve()):
            raise OutputError(f"{out}: the output folder would hold the input {inp}; choose another output folder")
    if out.is_symlink() and not out.exists():
        raise OutputError(f"{out}: a broken symbolic link; choose another output folder")
    if not out.exists():
        return False
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another output folder")
    if not any(out.iterdir()):
        return False
    if not overwrite:
        raise OutputError(
            f"{out}: exists and is not empty; choose another output folder or pass --overwrite "
            "(which replaces only an earlier output of this program)"
        )
    if not is_marked(out, kind):
        raise OutputError(
            f"{out}: not a {kind} written by human3r-jax (no {MARKER} marker), so --overwrite "
            "will not replace it; choose another output folder"
        )
    foreign = _foreign_entry(out, kind)
    if foreign is not None:
        raise OutputError(
            f"{out}: holds {foreign.relative_to(out)}, which human3r-jax did not write; "
            "move it away or choose another output folder (--overwrite replaces only its own files)"
        )
    return True


def remove_own(folder: Path, kind: str) -> None:
    """Delete an earlier output of this program (marked, nothing foreign in it); refuse anything else."""
    if not is_marked(folder, kind) or _foreign_entry(folder, kind) is not None:
        raise OutputError(f"{folder}: exists and is not a {kind} of human3r-jax; move it away and retry")
    shutil.rmtree(folder)


def replace_dir(new: Path, dest: Path) -> None:
    """Put the complete folder `new` at `dest`, replacing an earlier output there: `dest` is moved
    aside first, so at every moment one complete output sits at `dest` or beside it."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    old = dest.with_name(f".{dest.name}.replaced-{os.getpid()}")
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_free_space(folder: Path, nbytes: int) -> None:
    """Refuse before writing when the file system of `folder` (or its nearest existing parent) cannot
    take `nbytes` (plus 5 % and 1 MB for metadata): better than failing half-way."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = int(nbytes * 1.05) + (1 << 20)
    if free < need:
        raise OutputError(f"{folder}: not enough free space ({free / 2**20:.1f} MB free, {need / 2**20:.1f} MB needed)")
