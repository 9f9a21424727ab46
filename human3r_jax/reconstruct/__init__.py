"""Reconstruct videos or image folders: cameras, a dense scene and everyone's SMPL-X bodies.

Frames are decoded and preprocessed by a reader thread while the jitted step runs (compiled once per
resolution); results are written as each frame completes, and the whole-sequence exports are
assembled from those files at the end, so host memory does not grow with the length of the input.
Several inputs of the same resolution run as one batch, split over the available devices. The files'
schema, the per-person fields included, is `human3r_jax.export`.

    settings.py   Settings, check_settings, load_model → LoadedModel, CHECKPOINT_HELP
    reader.py     preprocess_frame, first_frame_size, the threaded _Reader
    writer.py     SequenceWriter: per-frame files, then (given poses applied) reconstruction.npz, trajectory.tum,
                  scene.glb, meta.json
    loop.py       run: the streaming loop (step, pose chaining, focal or given K, static camera, world points
                  and bodies, sharding)
    job.py        Job, prepare, run_job, reconstruct
"""

from human3r_jax.reconstruct.job import Job, prepare, reconstruct, run_job
from human3r_jax.reconstruct.loop import _bodies_world as _bodies_world
from human3r_jax.reconstruct.loop import _frame_geometry as _frame_geometry
from human3r_jax.reconstruct.loop import _mesh_and_sharding as _mesh_and_sharding
from human3r_jax.reconstruct.loop import run
from human3r_jax.reconstruct.reader import _Reader as _Reader
from human3r_jax.reconstruct.reader import first_frame_size, preprocess_frame
from human3r_jax.reconstruct.settings import CHECKPOINT_HELP, LoadedModel, Settings, check_settings, load_model
from human3r_jax.reconstruct.writer import SequenceWriter

__all__ = [
    "CHECKPOINT_HELP",
    "Job",
    "LoadedModel",
    "SequenceWriter",
    "Settings",
    "check_settings",
    "first_frame_size",
    "load_model",
    "prepare",
    "preprocess_frame",
    "reconstruct",
    "run",
    "run_job",
]
