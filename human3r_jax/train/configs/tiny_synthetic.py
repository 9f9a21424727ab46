"""A tiny Human3R trained on the synthetic BEDLAM-layout dataset, on the CPU: the smoke test of the
whole training path (pipeline, targets, losses, masked AdamW, checkpoints).

Command:

    python -m human3r_jax.data.synthetic --out /tmp/synth --smplx body_models
    human3r-jax train --config tiny_synthetic --set data_root=/tmp/synth --set smplx=body_models \
        --set workdir=/tmp/tiny_run

Expected runtime: about 4 minutes on a 2-core CPU (measured 4 min 14 s, peak RSS 3.3 GB): three
compilations (the train step at each of the two resolutions and the evaluation step, ~1 min each),
then ~0.8 s per step for 40 steps, and evaluations of 2 test batches before step 1 and at steps 20
and 40.
Expected result: the loss falls (tests/test_train.py's 30-step run of this model on this data,
at one resolution, ends below half its starting level; the measured run went from 19.4 at step 10
to 9.6 at step 40, the test loss median from 365 before training to about 170), and
/tmp/tiny_run/export/step_40 and export/best load in `human3r-jax reconstruct --checkpoint`.
The first line printed names 803,193 trainable parameters (the official groups, as human3r_bedlam).
"""

from human3r_jax.train.config import TrainConfig
from human3r_jax.train.configs.human3r_bedlam import FIXED, FROZEN, TRAINABLE  # the tiny model has the same tree


def get_config() -> TrainConfig:
    return TrainConfig(
        model="human3r_tiny",
        trainable_params=TRAINABLE,
        fixed_params=FIXED,
        frozen_params=FROZEN,
        random_init=True,
        batch_size=2,
        num_views=4,
        max_humans=4,
        resolutions=((64, 48), (48, 64)),
        aug_crop=4,
        samples_per_epoch=20,
        epochs=4,
        warmup_epochs=0.5,
        lr=1e-3,
        min_lr=1e-4,
        compute_dtype="float32",
        remat=False,
        save_every=20,
        keep=2,
        keep_period=None,
        log_every=10,
        workdir="runs/tiny",
        eval_every=20,
        eval_samples=4,
        eval_resolution=(64, 48),
    )
