"""argparse types shared by the bench scripts: a bad value is refused before anything runs (exit 2, one line)."""

from __future__ import annotations

import argparse
from pathlib import Path


def frame_size(text: str) -> str:
    """--size: WxH, both positive multiples of 16 (the patch size)."""
    w, sep, h = text.partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0 and int(w) % 16 == int(h) % 16 == 0):
        raise argparse.ArgumentTypeError(f"expected WxH in pixels, both positive multiples of 16, got {text!r}")
    return text


def count(text: str) -> int:
    """--frames, --repeats: a whole number, at least 1 (a median of nothing is no figure)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def json_path(text: str) -> Path:
    """--json: a file to write at the end; a folder there would only fail after the whole run."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name for the JSON")
    return path
