"""bench/compare_modules.py: our modules run alone on the inputs the step gives them; a bad checkout is one line and
exit code 2. With HUMAN3R_OFFICIAL_CUT3R (a CUT3R checkout) and -m slow, the official modules' recorded calls replay."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare_modules

from human3r_jax.config import preset

OFFICIAL = os.environ.get("HUMAN3R_OFFICIAL_CUT3R")


def frames(h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32) for _ in range(2)]


def test_our_modules_take_the_step_shapes():
    calls = compare_modules.our_calls("cut3r_tiny", frames(48, 64), seed=0)
    assert set(calls) == set(compare_modules.MODULES)  # a DPT head: every module, each DPT too
    out = {name: call() for name, call in calls.items()}
    for name, value in out.items():
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(value)), name
    feat, pos = out["encoder"]
    assert feat.shape[:2] == (1, 12) and pos.shape == (1, 12, 2)  # 3 x 4 patches of 16 px
    head = out["head"]
    assert head["pts3d_in_self_view"].shape == head["pts3d_in_other_view"].shape == (1, 48, 64, 3)
    assert head["rgb"].shape == (1, 48, 64, 3)
    assert out["dpt_self"].shape == out["dpt_cross"].shape == (1, 48, 64, 4)
    assert out["dpt_rgb"].shape == (1, 48, 64, 3)
    cfg = preset("cut3r_tiny")
    read, write = out["pose memory"]
    assert read.shape == (1, 1, cfg.dec_embed_dim)  # the pose query
    assert write.shape == (1, cfg.local_mem_size, 2 * cfg.dec_embed_dim)  # the new memory


def test_bad_checkout_is_one_line_exit_2(tmp_path, capsys):
    assert compare_modules.main(["--against-torch", f"cut3r={tmp_path}", "--json", os.devnull]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a cut3r checkout" in err[0], err


@pytest.mark.slow
@pytest.mark.skipif(not OFFICIAL, reason="set HUMAN3R_OFFICIAL_CUT3R to a CUT3R checkout")
def test_official_calls_replay(tmp_path):
    pytest.importorskip("torch")
    calls = compare_modules.official_calls("cut3r_224_linear_4", frames(224, 224), Path(OFFICIAL), seed=0)
    assert set(calls) == {"encoder", "pose memory", "decoders", "state block", "image block", "head"}
    for call in calls.values():
        call()
