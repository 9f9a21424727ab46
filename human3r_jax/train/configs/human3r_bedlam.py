"""The official Human3R fine-tuning (config/trian_human3r.yaml): ViT-L/896 Human3R from CUT3R +
Multi-HMR, BEDLAM only, 4 views, batch 8, 40 epochs × 500 steps, AdamW 1e-4 (β 0.9/0.95, wd 0.05),
5 warm-up epochs then cosine to 1e-6, clip 1.0 (with the original's carried decoder gradients),
bf16, rematerialisation; the official test set (1000 Test-split samples at 512×288) evaluated every
epoch with the official test criterion, the best weights exported.

Command (one accelerator; paths are yours):

    human3r-jax train --config human3r_bedlam \
        --set init_cut3r=ckpts/cut3r_512_dpt_4_64.pth --set init_multihmr=ckpts/multiHMR_896_L.pt \
        --set smplx=body_models --set data_root=data/processed_bedlam --set workdir=runs/human3r

Preprocess BEDLAM first: `human3r-jax preprocess-bedlam --raw RAW --labels NPZ --out data/processed_bedlam`.

Expected runtime: the original needs about one day on one 48 GB GPU for the 20,000 steps; this
port's GPU step time is measured by `python bench/bench_train.py` (see README). Re-running the
command in the same workdir resumes from the newest checkpoint (every 500 steps).

Expected result: the training loss falls from its first-epoch level within the warm-up, the test
loss (`test/loss_med` in TensorBoard) falls over the epochs, and the run ends with
`runs/human3r/export/step_20000` (and `export/best`), checkpoints for `human3r-jax reconstruct` that
should match the released human3r_896L in quality (not verified here: no BEDLAM, no GPU).
"""

from human3r_jax.train.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="human3r_896L", batch_size=8, num_views=4, epochs=40, warmup_epochs=5,
                       samples_per_epoch=4000, lr=1e-4, min_lr=1e-6, weight_decay=0.05,
                       compute_dtype="bfloat16", remat=True, fixed_grads="accumulate", save_every=500, keep=3,
                       keep_period=2500, eval_every=500, eval_samples=1000, eval_split="Test",
                       eval_resolution=(512, 288), eval_seed=42)
