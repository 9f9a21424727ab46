"""Reading frames: the model input of one frame (`preprocess_frame`), a source's model resolution from its
first frame (`first_frame_size`), and `_Reader`, which decodes and preprocesses a source in a thread a few
frames ahead of the model.

A reader holds at most `depth` frames. When the model is slower than the source, by default the reader
waits, and so does the decoder behind it (a file is simply read later; a live stream is buffered by the OS
or the device meanwhile, and falls behind). With `drop`, the reader keeps only the newest frames instead:
each new frame replaces the oldest waiting one, so the model always gets a recent frame (latency bounded
by `depth` frames), and `dropped` counts the frames it never saw.
"""

from __future__ import annotations

import collections
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
        where = source.path / raw.name if source.kind == "images" else f"{source.name} ({raw.name})"
        raise InputError(f"{where}: {e}") from None


def first_frame_size(source: FrameSource, size: int) -> tuple[int, int]:
    """Model input (W, H) of a source, from its first frame (checked to be usable, so that a bad
    input is refused before any output is written; a live source keeps that frame for the run)."""
    h, w = preprocess_frame(source, source.first(), size).shape[:2]
    return w, h


class _FrameQueue:
    """At most `bound` items between the reader's thread and the model: frames, then the end (or the error).
    `put` of a frame into a full queue waits, or with `drop` discards the oldest frame."""

    def __init__(self, bound: int, drop: bool):
        self.bound, self.drop = bound, drop
        self.items: collections.deque = collections.deque()
        self.dropped = 0
        self.closed = False
        self.cond = threading.Condition()

    def __len__(self) -> int:
        with self.cond:
            return len(self.items)

    def put(self, item, last: bool = False) -> bool:
        """Queue `item` (`last`: the end or an error, which waits for room rather than drop a frame); False
        once closed."""
        with self.cond:
            while len(self.items) >= self.bound and not self.closed:
                if self.drop and not last:
                    self.items.popleft()
                    self.dropped += 1
                else:
                    self.cond.wait()
            if self.closed:
                return False
            self.items.append(item)
            self.cond.notify_all()
            return True

    def get(self):
        with self.cond:
            while not self.items:
                self.cond.wait()
            item = self.items.popleft()
            self.cond.notify_all()
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Reader:
    """Decodes and preprocesses one source in a thread, at most `depth` frames ahead of the model (default:
    4, or 1 with `drop`, the newest frame only).

    Iterating yields (raw frame, model input [H, W, 3]); an error in the thread is raised there."""

    _END = object()

    def __init__(
        self,
        source: FrameSource,
        size: int,
        depth: int | None = None,
        prep: Callable | None = None,
        drop: bool = False,
    ):
        self.source, self.size = source, size
        self.prep = prep  # raw frame → model input; default: the demo's `preprocess`
        self.q = _FrameQueue(depth or (1 if drop else 4), drop)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def dropped(self) -> int:
        """Frames decoded but never handed to the model (with `drop`)."""
        return self.q.dropped

    def _run(self):
        try:
            shape = None
            for raw in self.source:
                img = self.prep(raw) if self.prep is not None else preprocess_frame(self.source, raw, self.size)
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise InputError(
                        f"{self.source.name}: {raw.name} is {raw.image.size[0]}x{raw.image.size[1]} and gives a "
                        f"{img.shape[1]}x{img.shape[0]} model input, the first frame {shape[1]}x{shape[0]}: the "
                        "frames of one sequence must share a size (resize them, or split the folder)"
                    )
                if not self.q.put((raw, img)):
                    return
            self.q.put(self._END, last=True)
        except BaseException as e:  # handed to the consumer, which raises it
            self.q.put(e, last=True)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.q.close()
