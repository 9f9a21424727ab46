"""Lazy frame sources: a video file (decoded with PyAV, one frame at a time), a folder of images, or a live
source: a camera (/dev/videoN), a network stream (rtsp://, http(s)://, udp://, tcp://, srt://) or `-`, a stream
piped into standard input.

Nothing is decoded before it is needed, so memory does not grow with the length of the input.

A live source is opened once, when the FrameSource is made: a daemon thread opens and decodes it and hands
its frames over a short queue, so that neither opening nor reading can hang: whatever stays silent for
`stall_timeout` seconds (the protocol's own timeout, and the wait on that queue as a backstop) ends in an
InputError naming the source. Its length is unknown (`length` is None) and it runs until the stream ends.
`first()` decodes the first frame and keeps it, so the check of the input before a run does not lose it: the
iteration yields it first. A pipe needs a format that streams: MPEG-TS and Matroska do; an mp4 only with its
index at the start (fragmented, or written with +faststart).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import PIL.Image

from human3r_jax.data.images import IMAGE_EXTENSIONS, open_image
from human3r_jax.errors import Human3rError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".ts")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "tcp", "srt")
STALL_TIMEOUT = 10.0  # seconds a live source may stay silent, opening included
_MP4_ON_A_PIPE = (
    "an mp4 can be read from a pipe only with its index at the start (ffmpeg -movflags frag_keyframe+empty_moov, "
    "or +faststart); or pipe MPEG-TS (-f mpegts) or Matroska (-f matroska)"
)


class InputError(Human3rError):
    """An input that cannot be read as a frame sequence."""


@dataclasses.dataclass(frozen=True)
class RawFrame:
    index: int  # position in the original sequence (before subsampling)
    name: str  # file name, or "frame_000123" for videos
    time: float  # seconds (videos: the frame's pts) or the index (images)
    image: PIL.Image.Image


def _video_frame(frame, i: int) -> RawFrame:
    """A decoded PyAV frame, the `i`-th of its stream, as a RawFrame."""
    t = float(frame.time) if frame.time is not None else float(i)
    return RawFrame(i, f"frame_{i:06d}", t, frame.to_image().convert("RGB"))


def _reason(e) -> str:
    """What went wrong, from a PyAV error, without the URL it names (which may hold a password)."""
    return getattr(e, "strerror", None) or type(e).__name__


def _scheme(spec: str) -> str | None:
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    return m.group(1).lower() if m else None


def _without_password(url: str) -> str:
    """The URL as messages and meta.json show it: a password in it is replaced by ***."""
    return re.sub(r"^([^:/]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def display_name(path: str | Path) -> str:
    """How messages and meta.json name a source: a stream URL without its password."""
    spec = str(path)
    return _without_password(spec) if _scheme(spec) else spec


def is_live(path: str | Path) -> bool:
    """A live source: `-` (standard input), a stream URL, or a camera (/dev/videoN)."""
    spec = str(path)
    return spec == "-" or _scheme(spec) is not None or spec.startswith("/dev/video")


class FrameSource:
    """Frames of `path` (video, image folder, or a live source: /dev/videoN, a stream URL, `-` for standard
    input), every `subsample`-th, at most `max_frames`."""

    def __init__(
        self,
        path: str | Path,
        subsample: int = 1,
        max_frames: int | None = None,
        stall_timeout: float = STALL_TIMEOUT,
    ):
        if subsample < 1:
            raise InputError(f"--subsample must be at least 1, got {subsample}")
        self.subsample, self.max_frames, self.stall_timeout = subsample, max_frames, stall_timeout
        spec = str(path)
        scheme = _scheme(spec)
        self.name = display_name(spec)
        self.live = is_live(spec)
        self._pending: RawFrame | None = None  # a live source's first frame, decoded by `first()`
        if self.live:
            self.path = spec
            if scheme is not None and scheme not in STREAM_SCHEMES:
                raise InputError(f"{self.name}: unknown stream protocol {scheme}:// (use {', '.join(STREAM_SCHEMES)})")
            self.kind = "pipe" if spec == "-" else "stream" if scheme else "camera"
            self._stream = _LiveStream(self)
            self.fps = self._stream.fps
            return
        self.path = Path(path)
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

    @property
    def length(self) -> int | None:
        """Number of frames this source yields (an estimate for videos whose header lacks it); None for a
        live source, whose length is unknown."""
        if self.live:
            return None
        if self.kind == "images":
            n = len(self.files)
        else:
            import av

            with av.open(str(self.path)) as c:
                n = c.streams.video[0].frames or 0
        n = -(-n // self.subsample)
        return min(n, self.max_frames) if self.max_frames else n

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f"{self.name} is a live source: its length is unknown (FrameSource.length is None)")
        return n

    def first(self) -> RawFrame:
        """The first frame (InputError if there is none). A live source keeps it: the iteration yields it
        first; call this before iterating."""
        if not self.live:
            for frame in self:
                return frame
        if self._pending is None:
            self._pending = self._stream.next()
            if self._pending is None:
                raise InputError(f"{self.name}: no frames (the stream ended before its first frame)")
        return self._pending

    def close(self) -> None:
        """Stop reading a live source (its thread closes it); nothing to do for files."""
        if self.live:
            self._stream.stop.set()

    def _raw(self) -> Iterator[RawFrame]:
        if self.live:
            if self._pending is not None:
                frame, self._pending = self._pending, None
                yield frame
            while (frame := self._stream.next()) is not None:
                yield frame
            return
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
                        yield _video_frame(frame, i)
        except av.FFmpegError as e:
            raise InputError(
                f"{self.path}: the video cannot be decoded after {decoded} frames ({e}); "
                "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            ) from None

    def __iter__(self) -> Iterator[RawFrame]:
        """The frames; a live source is read once (it is closed when this ends, however it ends)."""
        n = 0
        try:
            for frame in self._raw():
                n += 1
                yield frame
                if self.max_frames and n >= self.max_frames:  # before waiting for one more (live)
                    return
        finally:
            self.close()
        if n == 0:
            raise InputError(f"{self.name}: the {'stream' if self.live else 'video'} has no decodable frames")


class _Stdin:
    """Standard input as PyAV reads a file object: without `seek`, so PyAV streams it. Its first bytes are
    kept to recognise an mp4 (an `ftyp` box first), which a pipe can carry only in some layouts."""

    def __init__(self, fd: int):
        self.fd, self.head = fd, b""

    def read(self, n: int) -> bytes:
        data = os.read(self.fd, n)
        if len(self.head) < 8:
            self.head += data[: 8 - len(self.head)]
        return data

    def hint(self) -> str:
        return f"; {_MP4_ON_A_PIPE}" if self.head[4:8] == b"ftyp" else ""


def _stdin_fd() -> int:
    """The file descriptor of standard input, which must not be a terminal (nothing would ever come)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no stdin, or one without a descriptor
        raise InputError("-: there is no standard input to read a stream from") from None
    if os.isatty(fd):
        raise InputError(
            "-: standard input is a terminal, not a stream; pipe one in, e.g. "
            "ffmpeg -i CAMERA -f mpegts - | human3r-jax reconstruct - --out OUT"
        )
    return fd


_END = object()  # the stream ended


class _LiveStream:
    """The decoding thread of a live source. Its queue carries the stream's fps first (or the error that
    ended the opening), then the frames (every `subsample`-th), then _END or the error that ended it.
    Two frames at most wait in it: a reader slower than the source holds the decoder back (the OS or the
    device buffers the stream meanwhile) unless it drops frames itself (reconstruct's --drop-frames)."""

    def __init__(self, source: FrameSource):
        self.source, self.name, self.timeout = source, source.name, source.stall_timeout
        if source.kind == "camera" and not Path(source.path).exists():
            raise InputError(f"{self.name}: no such video device (is the camera connected? ls /dev/video* lists them)")
        self.stdin = _Stdin(_stdin_fd()) if source.kind == "pipe" else None
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.ended = False
        self.decoded = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"decode {self.name}")
        self.thread.start()
        self.fps = self._get(f"no answer within {self.timeout:g} s of opening it (is the stream running?)")

    def _get(self, silence: str):
        try:
            item = self.q.get(timeout=self.timeout)
        except queue.Empty:
            self.stop.set()
            raise InputError(f"{self.name}: {silence}") from None
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        return item

    def next(self) -> RawFrame | None:
        """The next frame, or None once the stream has ended."""
        if self.ended:
            return None
        item = self._get(f"the stream stalled: no frame for {self.timeout:g} s")
        if item is _END:
            self.ended = True
            return None
        return item

    def _put(self, item) -> bool:
        """Hand `item` over, waiting while the queue is full; False once the reader has stopped."""
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            container = self._open()
        except BaseException as e:  # handed to the reader, which raises it
            self._put(e)
            return
        try:
            with container:
                if not container.streams.video:
                    raise InputError(f"{self.name}: the stream has no video")
                stream = container.streams.video[0]
                rate = stream.average_rate
                if self._put(float(rate) if rate else None):
                    self._decode(container, stream)
        except BaseException as e:
            self._put(e)

    def _open(self):
        import av

        kind, us = self.source.kind, str(round(self.timeout * 1e6))
        try:
            if kind == "pipe":
                return av.open(self.stdin)
            if kind == "camera":
                return av.open(self.source.path, format="v4l2")
            options = {"timeout": us}  # microseconds of silence before a socket read or connect fails
            if _scheme(self.source.path) in ("rtsp", "rtsps"):
                options["rtsp_transport"] = "tcp"  # no frames lost to UDP, and the timeout applies
            return av.open(self.source.path, options=options)
        except (av.FFmpegError, OSError) as e:  # OSError: reading standard input failed
            raise InputError(self._open_error(e)) from None

    def _open_error(self, e) -> str:
        import av

        if self.stdin is not None:
            if not self.stdin.head:
                return f"{self.name}: no frames (standard input closed before any data)"
            return f"{self.name}: cannot read the stream on standard input ({_reason(e)}){self.stdin.hint()}"
        if self.source.kind == "camera":
            return (
                f"{self.name}: cannot open the camera ({_reason(e)}); the device may be missing, busy in another "
                "program, or not a capture device"
            )
        if isinstance(e, av.error.TimeoutError):
            return f"{self.name}: no answer within {self.timeout:g} s of opening it (is the stream running?)"
        if isinstance(e, av.error.ProtocolNotFoundError):
            return f"{self.name}: this build of PyAV (FFmpeg) cannot read {_scheme(self.source.path)}:// streams"
        return f"{self.name}: cannot open the stream ({_reason(e)})"

    def _decode(self, container, stream) -> None:
        import av

        try:
            for frame in container.decode(stream):
                i, self.decoded = self.decoded, self.decoded + 1
                if i % self.source.subsample == 0 and not self._put(_video_frame(frame, i)):
                    return
                if self.stop.is_set():
                    return
        except av.error.TimeoutError:
            raise InputError(f"{self.name}: the stream stalled: no frame for {self.timeout:g} s") from None
        except (av.FFmpegError, OSError) as e:
            hint = self.stdin.hint() if self.stdin is not None else ""
            done = f"after {self.decoded} frames"
            raise InputError(f"{self.name}: the stream cannot be decoded {done} ({_reason(e)}){hint}") from None
        self._put(_END)
