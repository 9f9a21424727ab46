"""BEDLAM training data: an index over the preprocessed sequences, a pure numpy sampler
of multi-view samples with the official `BEDLAM_Multi` semantics, and a deterministic, resumable
tf.data pipeline of batches. The formats (the preprocessed layout, the batch) are `data/schema.py`.

    errors.py     DataError
    index.py      sequence discovery, splits, the official exclusions (excluded_sequences.txt)
    readers.py    one frame's files: image, mask, depth, camera, SMPL-X labels (.npz or official .pkl)
    augment.py    crop/resize with intrinsics, colour jitter, ImgNorm
    sample.py     one sample: frames, input masks, people in slots, ray maps, the assembled arrays
    pipeline.py   batches, their resolution, the tf.data pipeline (TensorFlow imported lazily)

The 896-pixel padded image of the human-prior encoder, its intrinsics, and the ground-truth head cells
and detection map are not built here: the train step computes them on the accelerator from `img`, `K`
and the SMPL-X forward of the slots (as the official `SMPLModel.update_smpl_gt` does at loss time).
"""

from human3r_jax.data.bedlam.augment import color_jitter, crop_resize, img_norm, jitter_params
from human3r_jax.data.bedlam.errors import DataError
from human3r_jax.data.bedlam.index import HDRI_SCENES, INVALID_SEQUENCES, BedlamIndex, BedlamSequence, is_excluded
from human3r_jax.data.bedlam.pipeline import (
    BatchIterator,
    batch_resolution,
    import_tensorflow,
    iterate,
    make_batch,
    make_dataset,
)
from human3r_jax.data.bedlam.readers import (
    MAX_DEPTH,
    load_smpl_pickle,
    read_camera,
    read_depth,
    read_mask,
    read_rgb,
    read_smpl,
)
from human3r_jax.data.bedlam.sample import (
    MAX_INTERVAL,
    MIN_HUMAN_DEPTH,
    VIEW_INPUT_P,
    load_sample,
    ray_map,
    sample_frame_positions,
    select_humans,
    view_input_masks,
)
from human3r_jax.data.schema import OFFICIAL_RESOLUTIONS, SMPL_KEYS, SPLITS, SUBFOLDERS, batch_spec

__all__ = [
    "HDRI_SCENES",
    "INVALID_SEQUENCES",
    "MAX_DEPTH",
    "MAX_INTERVAL",
    "MIN_HUMAN_DEPTH",
    "OFFICIAL_RESOLUTIONS",
    "SMPL_KEYS",
    "SPLITS",
    "SUBFOLDERS",
    "VIEW_INPUT_P",
    "BatchIterator",
    "BedlamIndex",
    "BedlamSequence",
    "DataError",
    "batch_resolution",
    "batch_spec",
    "color_jitter",
    "crop_resize",
    "img_norm",
    "import_tensorflow",
    "is_excluded",
    "iterate",
    "jitter_params",
    "load_sample",
    "load_smpl_pickle",
    "make_batch",
    "make_dataset",
    "ray_map",
    "read_camera",
    "read_depth",
    "read_mask",
    "read_rgb",
    "read_smpl",
    "sample_frame_positions",
    "select_humans",
    "view_input_masks",
]
