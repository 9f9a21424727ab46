"""The index of a preprocessed BEDLAM split: its usable sequences (discovery, the official exclusions)
and the start frames a sample may begin at.

The excluded sequences are a data file of this package (`excluded_sequences.txt`), read at import.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
from pathlib import Path

import numpy as np

from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.schema import SPLITS, SUBFOLDERS

log = logging.getLogger(__name__)

# Official exclusions besides the listed sequences: scenes rendered with HDRI backgrounds (name prefixes)
# and close-up scenes.
HDRI_SCENES = (
    "20221010_3_1000_batch01hand",
    "20221017_3_1000_batch01hand",
    "20221018_3-8_250_batch01hand",
    "20221019_3_250_highbmihand",
)


def _read_name_list(filename: str) -> frozenset[str]:
    """The names of a package data file: one per line, '#' comments and blank lines ignored."""
    text = importlib.resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    return frozenset(name for line in text.splitlines() if (name := line.split("#", 1)[0].strip()))


INVALID_SEQUENCES = _read_name_list("excluded_sequences.txt")


def is_excluded(name: str) -> bool:
    """The official exclusions: listed invalid sequences, HDRI scenes, close-up scenes."""
    return name in INVALID_SEQUENCES or name.startswith(HDRI_SCENES) or "closeup" in name


@dataclasses.dataclass(frozen=True)
class BedlamSequence:
    name: str
    path: Path
    frames: tuple[str, ...]  # sorted basenames of rgb/*.png


class BedlamIndex:
    """The usable sequences of one split, sorted by name.

    A sample starts at any frame with at least `min_frames - 1` frames after it; `num_starts` counts
    those frames. With `allow_repeat` (the official training set) `min_frames` = max(num_views // 3, 3)
    and a short tail repeats frames; without it (the official test set) `min_frames` = num_views.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "Training",
        num_views: int = 4,
        skip_invalid: bool = True,
        allow_repeat: bool = True,
    ):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"BEDLAM root {root} does not exist or is not a folder")
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if num_views < 2:
            raise ValueError(f"num_views must be at least 2, got {num_views}")
        split_dir = root / SPLITS[split]
        if not split_dir.is_dir():
            raise DataError(
                f"{split_dir}: split folder missing (the preprocessing writes {root}/Training and {root}/Test)"
            )
        self.root, self.split, self.num_views = root, SPLITS[split], num_views
        self.min_frames = max(num_views // 3, 3) if allow_repeat else num_views
        sequences = []
        # hidden folders are the preprocessing's sequences in progress (or left by a killed run)
        for seq_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if skip_invalid and is_excluded(seq_dir.name):
                continue
            missing = [s for s in SUBFOLDERS if not (seq_dir / s).is_dir()]
            if missing:
                raise DataError(f"{seq_dir}: missing subfolder(s) {', '.join(missing)}")
            frames = tuple(sorted(f[:-4] for f in os.listdir(seq_dir / "rgb") if f.endswith(".png")))
            if len(frames) < self.min_frames:
                log.warning("skipping %s: %d frame(s), fewer than %d", seq_dir, len(frames), self.min_frames)
                continue
            sequences.append(BedlamSequence(seq_dir.name, seq_dir, frames))
        if not sequences:
            raise DataError(
                f"{split_dir}: no usable sequence (each needs the subfolders {', '.join(SUBFOLDERS)} "
                f"and at least {self.min_frames} frames)"
            )
        self.sequences = tuple(sequences)
        self._start_ends = np.cumsum([len(s.frames) - self.min_frames + 1 for s in sequences])

    @property
    def num_starts(self) -> int:
        return int(self._start_ends[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """Start number k in [0, num_starts) → (sequence index, frame position)."""
        i = int(np.searchsorted(self._start_ends, k, side="right"))
        return i, int(k - (self._start_ends[i - 1] if i else 0))

    def __repr__(self) -> str:
        return (
            f"BedlamIndex({str(self.root)!r}, split={self.split!r}, {len(self.sequences)} sequences, "
            f"{self.num_starts} start frames)"
        )
