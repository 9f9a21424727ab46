"""Live inputs: a stream piped into standard input (MPEG-TS, Matroska, fragmented mp4) or served on a localhost
TCP socket reads as the same frames, pixel for pixel and with the same times, as the file it was made from;
checking the first frame does not lose it; a stalled stream ends in an InputError within its stall timeout; bad
live inputs are one InputError line at once. The reader's --drop-frames queue stays bounded and keeps the
newest frames. Standard input is replaced by an os.pipe() fed from a thread; no network but 127.0.0.1."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest

from human3r_jax.data.video import FrameSource, InputError, RawFrame
from human3r_jax.reconstruct.reader import _Reader, first_frame_size

N, H, W, FPS = 8, 48, 64, 10


def encode(fmt: str, n: int = N, options: dict | None = None) -> bytes:
    """n frames of noise (64 x 48, H.264, 10 fps) in container `fmt`."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            image = np.random.default_rng(i).integers(0, 255, (H, W, 3), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


CLIPS = {  # container → (file suffix FrameSource reads by path, muxer options)
    "mpegts": (".ts", None),
    "matroska": (".mkv", None),
    "mp4": (".mp4", {"movflags": "frag_keyframe+empty_moov"}),  # fragmented: its index comes first
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for fmt, (suffix, options) in CLIPS.items():
        paths[fmt] = folder / f"clip{suffix}"
        paths[fmt].write_bytes(encode(fmt, options=options))
    return paths


class Feed:
    """A pipe standing in for standard input, written from a thread: `data`, then (with `hold`) nothing
    until `release`, then end of file."""

    def __init__(self, data: bytes, hold: bool = False):
        self.read_fd, write_fd = os.pipe()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._write, args=(write_fd, data, hold), daemon=True)
        self.thread.start()

    def _write(self, fd: int, data: bytes, hold: bool) -> None:
        try:
            with open(fd, "wb", buffering=0) as f:
                f.write(data)
                if hold:
                    self.release.wait(30)
        except BrokenPipeError:  # the reading end was closed first
            pass


@pytest.fixture
def stdin(monkeypatch):
    """feed(data, hold=False): standard input becomes a pipe carrying `data`. After the test: the writers
    released (end of file), the decoding threads finished, then the reading ends closed (so that no thread
    can read a descriptor number reused meanwhile) and the writers joined."""
    feeds = []

    def feed(data: bytes, hold: bool = False) -> Feed:
        feeds.append(Feed(data, hold))
        monkeypatch.setattr(sys, "stdin", open(feeds[-1].read_fd, "rb", buffering=0, closefd=False))  # noqa: SIM115
        return feeds[-1]

    yield feed
    for f in feeds:
        f.release.set()
    for t in threading.enumerate():
        if t.name == "decode -":
            t.join(10)
    for f in feeds:
        os.close(f.read_fd)
        f.thread.join(10)


def frames_of(source) -> list[tuple[int, float, np.ndarray]]:
    return [(r.index, r.time, np.asarray(r.image)) for r in source]


def assert_same_frames(got, want):
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in want]  # indices and pts times, exactly
    for (i, _, a), (_, _, b) in zip(got, want):
        assert np.array_equal(a, b), f"frame {i} differs"


@pytest.mark.parametrize("fmt", list(CLIPS))
def test_a_piped_stream_reads_as_its_file(stdin, clips, fmt):
    want = frames_of(FrameSource(clips[fmt]))
    assert len(want) == N and want[1][1] - want[0][1] == pytest.approx(1 / FPS)
    stdin(clips[fmt].read_bytes())
    source = FrameSource("-")
    assert (source.live, source.kind, source.length, source.fps) == (True, "pipe", None, FPS)
    with pytest.raises(TypeError, match="live source"):
        len(source)
    assert_same_frames(frames_of(source), want)


def test_checking_the_first_frame_does_not_lose_it(stdin, clips):
    want = frames_of(FrameSource(clips["mpegts"], subsample=2, max_frames=3))
    assert [i for i, _, _ in want] == [0, 2, 4]
    stdin(clips["mpegts"].read_bytes())
    source = FrameSource("-", subsample=2, max_frames=3)
    assert first_frame_size(source, 224) == (224, 224)  # the 64 x 48 frames' model input at 224
    assert_same_frames(frames_of(source), want)  # the frame decoded for the check comes first


@pytest.fixture(scope="module")
def stalling() -> bytes:
    """The first 3/4 of a 60-frame MPEG-TS clip (FFmpeg probes a stream's first 64 KiB before its first frame:
    the 8-frame clip is too short to open a stream that then stalls)."""
    data = encode("mpegts", n=60)
    return data[: len(data) * 3 // 4]


def test_a_stalled_pipe_ends_within_its_timeout(stdin, stalling):
    stdin(stalling, hold=True)  # the header and some frames, then nothing (the pipe stays open)
    source = FrameSource("-", stall_timeout=1.0)
    got, t = [], time.monotonic()
    with pytest.raises(InputError, match=r"^-: the stream stalled: no frame for 1 s$"):
        for raw in source:
            got.append(raw.index)
            t = time.monotonic()
    assert 0 < len(got) < 60 and time.monotonic() - t < 1.0 + 1.0  # margin: 1 s


def test_a_pipe_silent_from_the_start_is_given_up_on_opening(stdin):
    stdin(b"", hold=True)
    t = time.monotonic()
    with pytest.raises(InputError, match=r"^-: no answer within 0.5 s of opening it"):
        FrameSource("-", stall_timeout=0.5)
    assert time.monotonic() - t < 0.5 + 1.0


def test_an_empty_pipe_has_no_frames(stdin):
    stdin(b"")
    with pytest.raises(InputError, match=r"^-: no frames \(standard input closed before any data\)$"):
        FrameSource("-")


def test_a_terminal_on_stdin_is_refused_at_once(monkeypatch):
    main, tty = os.openpty()
    try:
        with open(tty, "rb", buffering=0, closefd=False) as f:
            monkeypatch.setattr(sys, "stdin", f)
            t = time.monotonic()
            with pytest.raises(InputError, match=r"^-: standard input is a terminal, not a stream; pipe one in"):
                FrameSource("-")
            assert time.monotonic() - t < 0.5
    finally:
        os.close(main)
        os.close(tty)


def test_an_mp4_with_its_index_at_the_end_names_the_fix(stdin):
    """A plain mp4 (moov after the frames) larger than PyAV's 32 KiB read buffer cannot be streamed."""
    data = encode("mp4", n=30)
    assert len(data) > 32768 and data[4:8] == b"ftyp"
    stdin(data)
    with pytest.raises(InputError) as e:
        list(FrameSource("-"))
    assert str(e.value).startswith("-: ") and "faststart" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("/dev/video99", "/dev/video99: no such video device"),
        ("ftp://example.invalid/x", "ftp://example.invalid/x: unknown stream protocol ftp://"),
        ("rtsp://user:secret@127.0.0.1:1/cam", "rtsp://user:***@127.0.0.1:1/cam: cannot open the stream"),
    ],
)
def test_bad_live_inputs_are_one_line(spec, words):
    t = time.monotonic()
    with pytest.raises(InputError) as e:
        FrameSource(spec, stall_timeout=2.0)
    assert str(e.value).startswith(words) and "\n" not in str(e.value) and "secret" not in str(e.value)
    assert time.monotonic() - t < 2.0


def serve_once(data: bytes, hold: threading.Event | None = None) -> int:
    """A localhost TCP server thread that sends `data` to its first client, then (with `hold`) waits for
    the event before closing. → its port."""
    server = socket.create_server(("127.0.0.1", 0))

    def run():
        with server, server.accept()[0] as conn:
            conn.sendall(data)
            if hold is not None:
                hold.wait(30)

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def test_a_tcp_stream_reads_as_its_file(clips):
    port = serve_once(clips["mpegts"].read_bytes())
    source = FrameSource(f"tcp://127.0.0.1:{port}")
    assert (source.live, source.kind, source.fps) == (True, "stream", FPS)
    assert_same_frames(frames_of(source), frames_of(FrameSource(clips["mpegts"])))


def test_a_stalled_tcp_stream_ends_within_its_timeout(stalling):
    hold = threading.Event()
    port = serve_once(stalling, hold)
    try:
        source = FrameSource(f"tcp://127.0.0.1:{port}", stall_timeout=1.0)
        t = time.monotonic()
        with pytest.raises(InputError, match=rf"^tcp://127.0.0.1:{port}: the stream stalled: no frame for 1 s$"):
            for _ in source:
                t = time.monotonic()
        assert time.monotonic() - t < 1.0 + 1.0
    finally:
        hold.set()


# ---------------------------------------------------------------- the reader's --drop-frames


class Bursts:
    """A source (duck-typed FrameSource) of `bursts` bursts of `size` tiny frames. After each burst it sets
    `waiting` (by then the reader has queued, or dropped, every frame of the burst) and, unless it was the
    last, waits for `go`."""

    kind, name, path = "stream", "bursts", "bursts"

    def __init__(self, bursts: int, size: int):
        self.bursts, self.size = bursts, size
        self.waiting, self.go = threading.Event(), threading.Event()
        self.image = PIL.Image.new("RGB", (2, 2))

    def __iter__(self):
        for b in range(self.bursts):
            for k in range(self.size):
                i = b * self.size + k
                yield RawFrame(i, f"frame_{i:06d}", float(i), self.image)
            self.waiting.set()
            if b + 1 < self.bursts:
                assert self.go.wait(10)
                self.go.clear()


def prep(raw) -> np.ndarray:
    return np.zeros((2, 2, 3), np.float32)


def test_dropping_keeps_the_newest_frame():
    source = Bursts(bursts=6, size=5)
    reader = _Reader(source, 224, prep=prep, drop=True)  # the newest frame only
    frames = iter(reader)
    for b in range(6):  # a model slower than the source: 5 frames arrive while it works on one
        assert source.waiting.wait(10)
        source.waiting.clear()
        assert len(reader.q) == 1  # the bound
        raw, img = next(frames)
        assert raw.index == 5 * b + 4 and img.shape == (2, 2, 3)  # the newest of the burst
        assert reader.dropped == 4 * (b + 1)  # the others, counted
        source.go.set()
    assert list(frames) == [] and reader.dropped + 6 == 30


def test_without_dropping_the_reader_waits_at_its_bound():
    source = Bursts(bursts=2, size=5)
    reader = _Reader(source, 224, prep=prep, depth=3)
    deadline = time.monotonic() + 10
    while len(reader.q) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.1)
    assert len(reader.q) == 3 and not source.waiting.is_set()  # full: the reader (and so the source) waits
    source.go.set()
    assert [raw.index for raw, _ in reader] == list(range(10)) and reader.dropped == 0


def test_dropping_over_a_piped_stream(stdin, clips):
    stdin(clips["mpegts"].read_bytes())
    source = FrameSource("-")
    reader = _Reader(source, 224, drop=True)
    seen = []
    for raw, img in reader:
        assert img.shape == (224, 224, 3)
        seen.append(raw.index)
        time.sleep(0.05)  # a model slower than the pipe
    assert seen[-1] == N - 1 and seen == sorted(seen) and reader.dropped + len(seen) == N
