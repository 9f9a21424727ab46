"""Reading .npz / .npy files that may be missing, truncated, corrupted or hostile, without pickle.

Every failure becomes one line, `error(f"{path}: …")`, naming the entry at fault, in the caller's
error class (the CLI prints such messages and exits 2). Object arrays are never read: unpickling a
crafted file can run code.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# What numpy and zipfile raise on a bad file: truncated (EOFError, BadZipFile), bad CRC (BadZipFile),
# broken deflate stream (zlib.error), unreadable (OSError), bad header or object array (ValueError),
# a header declaring a huge array (MemoryError).
READ_ERRORS = (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error)


def open_npz(path: str | Path, error: type[Exception]) -> np.lib.npyio.NpzFile:
    """The archive opened with allow_pickle=False (entries are read lazily: see `read_entry`)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except OSError as e:  # missing, a folder, no permission
        raise error(f"{path}: cannot open ({e.strerror or e})") from None
    except READ_ERRORS:  # numpy tries pickle on what is neither a zip nor a .npy: its message would mislead
        raise error(f"{path}: not an .npz archive (empty, truncated, or another kind of file)") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise error(f"{path}: a single .npy array, not an .npz archive")
    return npz


def read_entry(
    npz: np.lib.npyio.NpzFile, path: str | Path, key: str, error: type[Exception], skip_pickled: bool = False
) -> np.ndarray | None:
    """Entry `key` of an open archive; an object array raises, or gives None with `skip_pickled`."""
    try:
        return npz[key]
    except READ_ERRORS as e:
        if not (isinstance(e, ValueError) and "allow_pickle" in str(e)):  # numpy's message for object arrays
            raise error(f"{path}: entry {key!r} is corrupt or truncated ({type(e).__name__}: {e})") from None
        if skip_pickled:
            return None
        raise error(
            f"{path}: entry {key!r} holds Python objects; it is not read because unpickling can run code"
        ) from None


def read_npz(
    path: str | Path, error: type[Exception], keys: Sequence[str] | None = None, optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The entries `keys` (default: all) of the .npz file `path`, and those of `optional` it holds,
    read without pickle."""
    with open_npz(path, error) as npz:
        if keys is None:
            keys = npz.files
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise error(f"{path}: missing entr{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing))}")
        return {k: read_entry(npz, path, k, error) for k in [*keys, *(k for k in optional if k in npz.files)]}


def read_npy(path: str | Path, error: type[Exception]) -> np.ndarray:
    """The array in the .npy file `path`, read without pickle."""
    try:
        with open(path, "rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except OSError as e:
        raise error(f"{path}: cannot open ({e.strerror or e})") from None
    except READ_ERRORS as e:
        raise error(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
