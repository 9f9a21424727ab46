"""Reading frames: the model input of one frame (`preprocess_frame`), a source's model resolution from its
first frame (`first_frame_size`), and `_Reader`, which decodes and preprocesses a source in a thread a few
frames ahead of the model."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from human3r_jax.data.images import ImageError, preprocess
from human3r_jax.data.video import FrameSource, InputError


def preprocess_frame(source: FrameSource, raw, size: int) -> np.ndarray:
    """`preprocess` of one frame → [H, W, 3] in [-1, 1]; an unusable frame is an InputError naming it."""
    try:
        return preprocess(raw.image, size)
    except ImageError as e:
        where = source.path / raw.name if source.kind == "images" else f"{source.path} ({raw.name})"
        raise InputError(f"{where}: {e}") from None


def first_frame_size(source: FrameSource, size: int) -> tuple[int, int]:
    """Model input (W, H) of a source, from its first frame (checked to be usable, so that a bad
    input is refused before any output is written)."""
    for raw in source:
        h, w = preprocess_frame(source, raw, size).shape[:2]
        return w, h
    raise InputError(f"{source.path}: no frames")


class _Reader:
    """Decodes and preprocesses one source in a thread, `depth` frames ahead of the model.

    Iterating yields (raw frame, model input [H, W, 3]); an error in the thread is raised there."""

    _END = object()

    def __init__(self, source: FrameSource, size: int, depth: int = 4, prep: Callable | None = None):
        self.source, self.size = source, size
        self.prep = prep  # raw frame → model input; default: the demo's `preprocess`
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            shape = None
            for raw in self.source:
                img = self.prep(raw) if self.prep is not None else preprocess_frame(self.source, raw, self.size)
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise InputError(
                        f"{self.source.path}: {raw.name} is {raw.image.size[0]}x{raw.image.size[1]} and gives a "
                        f"{img.shape[1]}x{img.shape[0]} model input, the first frame {shape[1]}x{shape[0]}: the "
                        "frames of one sequence must share a size (resize them, or split the folder)"
                    )
                while not self.stop.is_set():
                    try:
                        self.q.put((raw, img), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
            self.q.put(self._END)
        except BaseException as e:  # handed to the consumer, which raises it
            self.q.put(e)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
