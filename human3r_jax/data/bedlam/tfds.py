"""BEDLAM as a TensorFlow Datasets dataset: `BedlamTfds` writes the preprocessed layout (`data/schema.py`)
into ArrayRecord shards, which TFDS reads by random access, and `TfdsIndex` reads them back as the index of
the training pipeline, so that the official sampling, crops and augmentations run unchanged on the same
bytes: batches are bit-identical to those of the files.

Building (manual download: the preprocessed layout; the raw release goes through
`human3r-jax preprocess-bedlam` first):

    python -m human3r_jax.data.bedlam.tfds --manual-dir PREPROCESSED --data-dir TFDS_DIR

The dataset, <data_dir>/bedlam_tfds/1.0.0/: the splits "train" (Training/) and "test" (Test/), without the
official exclusions (`index.is_excluded`), one example per frame, in the order of the layout (sequences
by name, then frames by name):

    sequence      text    the sequence folder's name
    frame         text    the frame's name (the stem of its files)
    frame_index   int32   its position in the sequence
    rgb, mask     bytes   rgb/<frame>.png and mask/<frame>.png as they are
    depth         bytes   depth/<frame>.npy as it is
    cam           bytes   cam/<frame>.npz as it is
    smpl          bytes   smpl/<frame>.npz as it is, or the official smpl/<frame>.pkl (read with the
                          restricted unpickler) rewritten as that .npz: the dataset holds no pickle

and the metadata "sequences": split → [[sequence, [frame names]], ...], the listing of those examples.

Reading. `TfdsIndex` is a `BedlamIndex` whose sequence paths are `StoredPath`s: the readers open
<sequence>/rgb/<frame>.png and the like, and get the stored bytes. Each process opens the split's data
source (`builder.as_data_source`) and reads only the frames of its own samples (`pipeline.make_batch`);
the examples are not dealt out to processes in shards (`tfds.split_for_jax_process`), because a sample
may draw any frame of the split.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import errno
import io
import logging
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.bedlam.index import BedlamIndex, BedlamSequence, is_excluded
from human3r_jax.data.bedlam.readers import read_smpl
from human3r_jax.data.schema import SMPL_KEYS, SPLITS, SUBFOLDERS

try:
    import tensorflow_datasets as tfds
except ImportError as e:
    raise ImportError("the BEDLAM TFDS dataset needs tensorflow-datasets: pip install human3r-jax[train]") from e

log = logging.getLogger(__name__)

TFDS_SPLITS = {"Training": "train", "Test": "test"}  # layout folder → TFDS split
EXTENSIONS = {"rgb": ".png", "depth": ".npy", "mask": ".png", "cam": ".npz", "smpl": ".npz"}
_KEY_RANGE = 2**128  # TFDS's example keys: its writer sorts them in 1000 buckets of this range


# ---------------------------------------------------------------- writing


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _smpl_bytes(smpl_dir: Path, frame: str) -> bytes:
    """smpl/<frame>.npz as it is, else the official .pkl as the .npz the readers read identically."""
    npz = smpl_dir / f"{frame}.npz"
    if npz.exists():
        return _file_bytes(npz)
    people = read_smpl(smpl_dir, frame)  # the .pkl through the restricted unpickler
    buffer = io.BytesIO()
    np.savez(buffer, **{SMPL_KEYS[key][0]: a for key, a in people.items()})
    return buffer.getvalue()


def _example(seq: BedlamSequence, position: int, frame: str) -> dict:
    files = {sub: _file_bytes(seq.path / sub / f"{frame}{ext}") for sub, ext in EXTENSIONS.items() if sub != "smpl"}
    files["smpl"] = _smpl_bytes(seq.path / "smpl", frame)
    return {"sequence": seq.name, "frame": frame, "frame_index": position, **files}


def _scan_sequence(seq_dir: Path) -> BedlamSequence:
    missing = [s for s in SUBFOLDERS if not (seq_dir / s).is_dir()]
    if missing:
        raise DataError(f"{seq_dir}: missing subfolder(s) {', '.join(missing)}")
    frames = tuple(sorted(p.name[:-4] for p in (seq_dir / "rgb").iterdir() if p.name.endswith(".png")))
    return BedlamSequence(seq_dir.name, seq_dir, frames)


def scan_layout(root: Path) -> dict[str, list[BedlamSequence]]:
    """TFDS split → the sequences of a preprocessed layout (as `BedlamIndex` finds them, every length)."""
    layout = {}
    for folder, split in TFDS_SPLITS.items():
        split_dir = root / folder
        if not split_dir.is_dir():
            continue
        # hidden folders are the preprocessing's sequences in progress (or left by a killed run)
        names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        sequences = [_scan_sequence(split_dir / name) for name in names if not is_excluded(name)]
        if not any(seq.frames for seq in sequences):
            raise DataError(f"{split_dir}: no sequence with frames (rgb/<frame>.png)")
        layout[split] = sequences
    if not layout:
        raise _not_a_layout(root)
    return layout


def _not_a_layout(root: Path) -> DataError:
    return DataError(
        f"{root}: not a preprocessed BEDLAM layout (no Training/ or Test/ folder); "
        "the raw release goes through `human3r-jax preprocess-bedlam` first"
    )


class BedlamTfds(tfds.core.GeneratorBasedBuilder):
    """The preprocessed BEDLAM layout, one example per frame (the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "The files of the preprocessed layout, one example per frame."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir is a preprocessed BEDLAM layout (<root>/{Training,Test}/<sequence>/{rgb,depth,mask,cam,smpl}/), "
        "as `human3r-jax preprocess-bedlam` writes it from the raw release (https://bedlam.is.tue.mpg.de/)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="BEDLAM (synthetic humans in video), the preprocessed layout of Human3R's training.",
            features=tfds.features.FeaturesDict(
                {
                    "sequence": tfds.features.Text(),
                    "frame": tfds.features.Text(),
                    "frame_index": tfds.features.Scalar(np.int32),
                    **{sub: tfds.features.Tensor(shape=(), dtype=np.object_) for sub in SUBFOLDERS},  # bytes
                }
            ),
            homepage="https://bedlam.is.tue.mpg.de/",
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # record r of a split is frame r of its listing
        )

    def _split_generators(self, dl_manager):
        layout = scan_layout(Path(dl_manager.manual_dir))
        self.info.metadata["sequences"] = {
            split: [[seq.name, list(seq.frames)] for seq in sequences] for split, sequences in layout.items()
        }
        return {split: self._generate_examples(sequences) for split, sequences in layout.items()}

    def _generate_examples(self, sequences: list[BedlamSequence]):
        # Unshuffled examples are written in key order; keys spread over the key range keep that order
        # and fill TFDS's sorting buckets evenly (keys 0, 1, … would all land in one, sorted in memory).
        key_step = _KEY_RANGE // sum(len(seq.frames) for seq in sequences)
        number = 0
        for seq in sequences:
            for position, frame in enumerate(seq.frames):
                yield number * key_step, _example(seq, position, frame)
                number += 1


def build(manual_dir: str | Path, data_dir: str | Path) -> BedlamTfds:
    """Write the dataset of the preprocessed layout `manual_dir` under `data_dir` (kept if already there;
    TFDS writes into a temporary folder and renames it when complete)."""
    manual_dir = Path(manual_dir)
    if not any((manual_dir / folder).is_dir() for folder in TFDS_SPLITS):  # before TFDS's own, longer check
        raise _not_a_layout(manual_dir)
    builder = BedlamTfds(data_dir=str(data_dir), file_format=tfds.core.FileFormat.ARRAY_RECORD)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir),
            try_download_gcs=False,
            compute_stats=tfds.download.ComputeStatsMode.SKIP,  # statistics of bytes say nothing
        )
    )
    return builder


# ---------------------------------------------------------------- reading


class FrameStore:
    """The records of one split of a prepared dataset, by (sequence, frame name).

    listing: (sequence, frame names) of the split in record order (its metadata)."""

    def __init__(self, builder: BedlamTfds, split: str, listing: list[tuple[str, tuple[str, ...]]]):
        self.name = f"{builder.data_path}[{split}]"
        for shard in builder.info.splits[split].file_instructions:
            if not Path(shard.filename).is_file():
                raise DataError(f"{shard.filename}: shard missing from the dataset (build it again)")
        self.source = builder.as_data_source(split=split)
        self._sequences = {}  # sequence → (number of its first record, its frame names sorted)
        first = 0
        for name, frames in listing:
            self._sequences[name] = first, frames
            first += len(frames)
        if first != len(self.source):
            raise DataError(f"{self.name}: {len(self.source)} records, but its listing has {first} frames")
        # The readers open a frame's five files one after another: each thread keeps its last record.
        self._last = threading.local()

    def locate(self, sequence: str, frame: str) -> int | None:
        """The record number of a frame; None if the split has no such frame."""
        first, frames = self._sequences.get(sequence, (0, ()))
        i = bisect.bisect_left(frames, frame)
        return first + i if i < len(frames) and frames[i] == frame else None

    def record(self, number: int) -> dict:
        """Record `number` (feature → value), checked against the listing."""
        last = self._last
        if getattr(last, "number", None) != number:
            record = self.source[number]
            found = record["sequence"].decode(), record["frame"].decode()
            if self.locate(*found) != number:
                raise DataError(f"{self.name}: record {number} holds {'/'.join(found)}, not what its listing says")
            last.number, last.record = number, record
        return last.record


@dataclasses.dataclass(frozen=True)
class StoredPath:
    """<sequence>/<subfolder>/<file> of the layout in a split of the dataset: a `readers.LayoutPath` whose
    files open as their stored bytes."""

    store: FrameStore
    sequence: str
    parts: tuple[str, ...] = ()

    def __truediv__(self, part: str) -> StoredPath:
        return dataclasses.replace(self, parts=(*self.parts, part))

    def __str__(self) -> str:
        return "/".join((self.store.name, self.sequence, *self.parts))

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else self.sequence

    def _record_number(self) -> int | None:
        if len(self.parts) != 2 or self.parts[0] not in EXTENSIONS:
            return None
        sub, filename = self.parts
        frame, ext = filename[: -len(EXTENSIONS[sub])], filename[-len(EXTENSIONS[sub]) :]
        return self.store.locate(self.sequence, frame) if ext == EXTENSIONS[sub] else None

    def exists(self) -> bool:
        return self._record_number() is not None

    def open(self, mode: str = "rb") -> io.BytesIO:
        if mode != "rb":
            raise ValueError(f"{self}: the dataset is read-only (mode {mode!r})")
        number = self._record_number()
        if number is None:
            raise FileNotFoundError(errno.ENOENT, "not in the dataset", str(self))
        return io.BytesIO(self.store.record(number)[self.parts[0]])


def open_builder(data_dir: str | Path) -> BedlamTfds:
    """The prepared dataset under `data_dir`, as written by `build`."""
    builder = BedlamTfds(data_dir=str(data_dir))
    if not builder.is_prepared():
        raise DataError(
            f"{data_dir}: no prepared {builder.name} dataset "
            f"(build it: python -m {__name__} --manual-dir PREPROCESSED --data-dir {data_dir})"
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DataError(f"{builder.data_path}: written as {builder.info.file_format.value}, not array_record")
    return builder


def _listing(builder: BedlamTfds, split: str) -> list[tuple[str, tuple[str, ...]]]:
    """The split's (sequence, frame names) in record order, from the metadata, checked."""
    where = f"{builder.data_path}/metadata.json"
    try:
        listing = builder.info.metadata["sequences"][split]
        listing = [(name, tuple(frames)) for name, frames in listing]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: no sequence listing for the {split!r} split") from None
    for name, frames in listing:
        if not (isinstance(name, str) and all(isinstance(f, str) for f in frames) and list(frames) == sorted(frames)):
            raise DataError(f"{where}: {split!r} sequence {name!r}: expected a name and its frame names, sorted")
    return listing


class TfdsIndex(BedlamIndex):
    """`BedlamIndex` of a split of the dataset under `data_dir`: the same sequences, frames and start frames
    as `BedlamIndex` of its source layout, each sequence's `path` a `StoredPath`. The official exclusions
    were applied when building."""

    def __init__(self, data_dir: str | Path, split: str = "Training", num_views: int = 4, allow_repeat: bool = True):
        # BedlamIndex's discovery lists folders; the rest of its state is set here the same way
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if num_views < 2:
            raise ValueError(f"num_views must be at least 2, got {num_views}")
        builder = open_builder(data_dir)
        tfds_split = TFDS_SPLITS[SPLITS[split]]
        if tfds_split not in builder.info.splits:
            raise DataError(f"{builder.data_path}: no {tfds_split!r} split (its layout had no {SPLITS[split]}/)")
        listing = _listing(builder, tfds_split)
        store = FrameStore(builder, tfds_split, listing)
        self.root, self.split, self.num_views = Path(data_dir), SPLITS[split], num_views
        self.min_frames = max(num_views // 3, 3) if allow_repeat else num_views
        sequences = []
        for name, frames in listing:
            if len(frames) < self.min_frames:
                log.warning(
                    "skipping %s/%s: %d frame(s), fewer than %d", store.name, name, len(frames), self.min_frames
                )
                continue
            sequences.append(BedlamSequence(name, StoredPath(store, name), frames))
        if not sequences:
            raise DataError(f"{store.name}: no usable sequence (each needs at least {self.min_frames} frames)")
        self.sequences = tuple(sequences)
        self._start_ends = np.cumsum([len(s.frames) - self.min_frames + 1 for s in sequences])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the TFDS dataset (ArrayRecord) of a preprocessed BEDLAM layout.")
    ap.add_argument("--manual-dir", required=True, help="the preprocessed layout (human3r-jax preprocess-bedlam)")
    ap.add_argument("--data-dir", required=True, help="TFDS data_dir: the dataset goes to <data-dir>/bedlam_tfds/")
    args = ap.parse_args(argv)
    try:
        builder = build(args.manual_dir, args.data_dir)
    except DataError as e:
        ap.exit(2, f"error: {e}\n")
    print(builder.data_path)


if __name__ == "__main__":
    main()
