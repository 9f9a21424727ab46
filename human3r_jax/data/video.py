"""Lazy frame sources: a video file (decoded with PyAV, one frame at a time) or a folder of images.

Nothing is decoded before it is needed, so memory does not grow with the length of the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import PIL.Image

from human3r_jax.data.images import IMAGE_EXTENSIONS, open_image
from human3r_jax.errors import Human3rError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")


class InputError(Human3rError):
    """An input that cannot be read as a frame sequence."""


@dataclasses.dataclass(frozen=True)
class RawFrame:
    index: int  # position in the original sequence (before subsampling)
    name: str  # file name, or "frame_000123" for videos
    time: float  # seconds (videos) or the index (images)
    image: PIL.Image.Image


class FrameSource:
    """Frames of `path` (video or image folder), every `subsample`-th, at most `max_frames`."""

    def __init__(self, path: str | Path, subsample: int = 1, max_frames: int | None = None):
        self.path = Path(path)
        if subsample < 1:
            raise InputError(f"--subsample must be at least 1, got {subsample}")
        self.subsample, self.max_frames = subsample, max_frames
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.kind = "images"
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.files:
                raise InputError(f"{self.path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            self.fps = None
        elif self.path.suffix.lower() in VIDEO_EXTENSIONS:
            self.kind = "video"
            self.fps = self._probe()
        else:
            raise InputError(f"{self.path}: not a video ({', '.join(VIDEO_EXTENSIONS)}) or a folder of images")

    def _probe(self) -> float | None:
        import av

        try:
            with av.open(str(self.path)) as c:
                if not c.streams.video:
                    raise InputError(f"{self.path}: the file has no video stream")
                rate = c.streams.video[0].average_rate
                return float(rate) if rate else None
        except av.FFmpegError as e:
            raise InputError(f"{self.path}: cannot open the video ({e})") from None

    def __len__(self) -> int:
        """Number of frames this source yields (an estimate for videos whose header lacks it)."""
        if self.kind == "images":
            n = len(self.files)
        else:
            import av

            with av.open(str(self.path)) as c:
                n = c.streams.video[0].frames or 0
        n = -(-n // self.subsample)
        return min(n, self.max_frames) if self.max_frames else n

    def _raw(self) -> Iterator[RawFrame]:
        if self.kind == "images":
            for i, f in enumerate(self.files):
                if i % self.subsample == 0:
                    yield RawFrame(i, f.name, float(i), open_image(f))
            return
        import av

        decoded = 0
        try:
            with av.open(str(self.path)) as c:
                for frame in c.decode(c.streams.video[0]):
                    i, decoded = decoded, decoded + 1
                    if i % self.subsample == 0:
                        t = float(frame.time) if frame.time is not None else float(i)
                        yield RawFrame(i, f"frame_{i:06d}", t, frame.to_image().convert("RGB"))
        except av.FFmpegError as e:
            raise InputError(
                f"{self.path}: the video cannot be decoded after {decoded} frames ({e}); "
                "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            ) from None

    def __iter__(self) -> Iterator[RawFrame]:
        n = 0
        for frame in self._raw():
            if self.max_frames and n >= self.max_frames:
                return
            n += 1
            yield frame
        if n == 0:
            raise InputError(f"{self.path}: the video has no decodable frames")
