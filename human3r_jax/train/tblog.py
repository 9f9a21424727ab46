"""Scalars to TensorBoard through `tf.summary` (TensorFlow is already the data pipeline's dependency),
kept off the GPU."""

from __future__ import annotations

import os
from pathlib import Path


class TensorBoardWriter:
    def __init__(self, logdir: str | Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from human3r_jax.data.bedlam import import_tensorflow

        self.tf = import_tensorflow()
        self.writer = self.tf.summary.create_file_writer(str(logdir))

    def scalars(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for k, v in values.items():
                self.tf.summary.scalar(k, v)

    def flush(self) -> None:
        self.writer.flush()
