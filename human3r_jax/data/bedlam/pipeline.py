"""Batches of samples (`schema.batch_spec`) and the deterministic, resumable tf.data pipeline over them.

Determinism and resume: batch number `step` is a pure function of (seed, step). Its resolution is drawn
from the list (the official sampler's weights: the first half of the list twice as likely) by
`default_rng([seed, step, 2**32 - 1])`; sample i uses `default_rng([seed, step, i])` for everything
(start frame, stride, crops, colour jitter, input masks). The start frame is uniform over all start
frames of the split, with replacement (the official sampler draws dataset indices, which are start
frames, so longer sequences are drawn more often). `make_dataset(..., start_step=k)` therefore
yields exactly batches k, k+1, … of a fresh run, with no tf.data checkpoint.

Processes: with P processes, process p builds samples [p·B/P, (p+1)·B/P) of the global batch of B and
reads only their frames; the P parts, concatenated in process order, are the batch of one process.
The frames come from the index's sequences: the files of the preprocessed layout (`BedlamIndex`) or a
TFDS build of it (`bedlam.tfds.TfdsIndex`), chosen by `open_index`.

Needs TensorFlow only for `make_dataset`/`iterate` (`pip install human3r-jax[train]`); TensorFlow is
imported lazily and never sees a GPU.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import weakref
from collections.abc import Sequence

import numpy as np

from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.bedlam.index import BedlamIndex
from human3r_jax.data.bedlam.sample import load_sample
from human3r_jax.data.schema import OFFICIAL_RESOLUTIONS, batch_spec

log = logging.getLogger(__name__)

_RESOLUTION_STREAM = 2**32 - 1  # a third seed word no sample index reaches
DATA_SOURCES = ("files", "tfds")


def open_index(data_source: str, root, **index_kw) -> BedlamIndex:
    """The index of `root`: a preprocessed layout ("files") or the data_dir of a `BedlamTfds` build
    ("tfds", which imports tensorflow_datasets); index_kw: split, num_views, allow_repeat."""
    if data_source == "files":
        return BedlamIndex(root, **index_kw)
    if data_source == "tfds":
        from human3r_jax.data.bedlam.tfds import TfdsIndex

        return TfdsIndex(root, **index_kw)
    raise DataError(f"data_source={data_source!r}: expected one of {', '.join(DATA_SOURCES)}")


def process_samples(batch_size: int, process_index: int, process_count: int) -> range:
    """The samples of the global batch that process `process_index` of `process_count` builds."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    if batch_size % process_count:
        raise DataError(f"batch_size={batch_size} does not split evenly over {process_count} processes")
    per_process = batch_size // process_count
    return range(process_index * per_process, (process_index + 1) * per_process)


# ---------------------------------------------------------------- batches (numpy)


def batch_resolution(seed: int, step: int, resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (W, H) of batch `step`: the official sampler's weights, first half of the list ×2."""
    p = np.ones(len(resolutions))
    p[: len(resolutions) // 2] *= 2
    i = np.random.default_rng([seed, step, _RESOLUTION_STREAM]).choice(len(resolutions), p=p / p.sum())
    return tuple(resolutions[i])


def make_batch(
    index: BedlamIndex,
    *,
    seed: int,
    step: int,
    batch_size: int,
    resolutions: Sequence[tuple[int, int]] = OFFICIAL_RESOLUTIONS,
    process_index: int = 0,
    process_count: int = 1,
    **sample_kw,
) -> dict[str, np.ndarray]:
    """This process's part of batch number `step` (`schema.batch_spec` with batch_size // process_count
    samples: `process_samples`), a pure function of (seed, step, process_index, process_count)."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got {seed}, {step}")
    samples_here = process_samples(batch_size, process_index, process_count)
    resolution = batch_resolution(seed, step, resolutions)
    samples = [
        load_sample(index, np.random.default_rng([seed, step, i]), resolution, **sample_kw) for i in samples_here
    ]
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    batch["step"] = np.int64(step)
    return batch


# ---------------------------------------------------------------- tf.data


_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


def _close_live_iterators():
    for it in list(_LIVE_ITERATORS):
        it.close()


def import_tensorflow():
    """Import TensorFlow lazily, quiet, and hidden from every GPU (the accelerator belongs to JAX)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("the BEDLAM training pipeline needs TensorFlow: pip install human3r-jax[train]") from e
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow was initialised with a visible GPU before the data pipeline could hide it")
    # Registered after TensorFlow's own exit hooks so that it runs before them (atexit is LIFO).
    atexit.unregister(_close_live_iterators)
    atexit.register(_close_live_iterators)
    return tf


def make_dataset(
    index: BedlamIndex,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    resolutions: Sequence[tuple[int, int]] = OFFICIAL_RESOLUTIONS,
    process_index: int = 0,
    process_count: int = 1,
    num_parallel: int | None = None,
    prefetch: int = 2,
    **sample_kw,
):
    """An endless tf.data.Dataset of batches start_step, start_step + 1, … (dicts of tensors,
    `schema.batch_spec`; H and W static None), this process's part of each (`make_batch`; the caller
    passes jax.process_index() and jax.process_count()). num_parallel: batches built at once (default
    AUTOTUNE); sample_kw: aug_crop, max_humans, jitter as in `load_sample`.

    Prefer `iterate`: a raw iterator of this dataset that is still alive when Python exits can hang
    the process (a batch being built in Python while the interpreter finalises); delete it first."""
    local_size = len(process_samples(batch_size, process_index, process_count))
    tf = import_tensorflow()
    spec = batch_spec(local_size, index.num_views, sample_kw.get("max_humans", 10))
    keys = list(spec)
    process = {"process_index": process_index, "process_count": process_count}

    def build(step):
        batch = make_batch(
            index, seed=seed, step=int(step), batch_size=batch_size, resolutions=resolutions, **process, **sample_kw
        )
        return tuple(batch[k] for k in keys)

    def to_batch(step):
        arrays = tf.numpy_function(build, [step], [tf.as_dtype(spec[k][0]) for k in keys], stateful=False)
        return {k: tf.ensure_shape(a, spec[k][1]) for k, a in zip(keys, arrays)}

    parallel = tf.data.AUTOTUNE if num_parallel is None else num_parallel
    ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    return ds.map(to_batch, num_parallel_calls=parallel, deterministic=True).prefetch(prefetch)


class BatchIterator:
    """Numpy batches of a dataset; `close()` (also run at interpreter exit) stops its tf.data iterator
    while Python can still finish the batches in flight."""

    def __init__(self, dataset):
        self._it = dataset.as_numpy_iterator()
        _LIVE_ITERATORS.add(self)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            raise StopIteration
        tf = import_tensorflow()
        try:
            return next(self._it)
        except tf.errors.OpError as e:  # a DataError raised inside tf.data arrives wrapped in TF's text
            found = re.search(r"DataError: (.+)", e.message or "")
            raise DataError(found.group(1).strip() if found else f"data pipeline: {e.message}") from None

    def close(self) -> None:
        self._it = None  # the last reference: TensorFlow cancels and joins its workers here


def iterate(index: BedlamIndex, **kwargs) -> BatchIterator:
    """`make_dataset(index, **kwargs)` as numpy dicts (same arguments)."""
    return BatchIterator(make_dataset(index, **kwargs))
