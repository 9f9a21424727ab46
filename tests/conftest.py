"""Test configuration: strict dtype promotion, the shared fixtures, and small models."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import chex
import jax
import numpy as np
import pytest

from human3r_jax import checkpoint as ckpt
from human3r_jax.config import DinoConfig, cut3r_preset

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HUMAN3R_JAX_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SPEC = SHARED / "spec"


def pytest_report_header(config):
    """The free space where tests write: a run needs ~5 GB there, and a full disk fails tests in bulk."""
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    return f"free in {tmp}: {free:.1f} GiB" + ("  (under 6 GiB: tests may fail on writes)" if free < 6 else "")


@pytest.fixture(autouse=True)
def strict_promotion():
    """Implicit dtype promotion is an error in tests: every mixed-precision step must be explicit."""
    with jax.numpy_dtype_promotion("strict"):
        yield


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test where the shared material is absent (a user's clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(
            f"{p} not found: the official-code fixtures live in ../shared (CI has it; set "
            "HUMAN3R_JAX_SHARED to point elsewhere)"
        )
    return p


@pytest.fixture(scope="session")
def smplx_root(tmp_path_factory):
    """A folder with smplx/SMPLX_NEUTRAL.npz: the synthetic model the fixtures used (224 MB, seed 0)."""
    tool = shared_path("tools", "make_fake_smplx.py")
    root = tmp_path_factory.mktemp("body_models")
    subprocess.run(
        [sys.executable, str(tool), "--root", str(root), "--seed", "0"], check=True, stdout=subprocess.DEVNULL
    )
    return root


@pytest.fixture(scope="session")
def smplx2smpl_file(tmp_path_factory):
    """One synthetic smplx2smpl.pkl per session (~290 MB, dense like the real one) → (path, its matrix)."""
    from fake_body_models import write_fake_smplx2smpl

    path = tmp_path_factory.mktemp("smplx2smpl") / "smplx2smpl.pkl"
    return path, write_fake_smplx2smpl(path, seed=0)


@pytest.fixture(scope="session")
def body_models_root(tmp_path_factory, smplx_root, smplx2smpl_file):
    """A complete synthetic --body-models folder in the official layout (smpl/, smplx/)."""
    from fake_body_models import write_fake_body_models

    neutral = smplx_root / "smplx" / "SMPLX_NEUTRAL.npz"
    return write_fake_body_models(tmp_path_factory.mktemp("models"), neutral, smplx2smpl=smplx2smpl_file[0])


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    """Leaf-wise allclose of two pytrees with identical structure (chex names the differing leaf by its path)."""
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


TINY_DINO = DinoConfig(embed_dim=64, depth=2, num_heads=2)  # the human3r_tiny fixture's backbone
TINY = dataclasses.replace(cut3r_preset("cut3r_tiny"), state_size=12, local_mem_size=8)


@pytest.fixture(scope="session")
def tiny_model():
    """(cfg, graphdef, params) of a tiny random CUT3R (12 state tokens: a non-square state grid)."""
    graphdef, params = ckpt.random_model(TINY, seed=0)
    return TINY, graphdef, params


def write_multihmr(path: Path) -> dict:
    """A Multi-HMR checkpoint (its own key names and an extra module of its own) holding the
    human3r_tiny fixture's backbone and detection MLPs, saved with torch at `path`. → its state dict."""
    import torch

    from human3r_jax.converters.convert import read_official

    state, _ = read_official(shared_path("fixtures", "human3r_tiny", "checkpoint.pth"))
    mhmr = {"module." + k: torch.from_numpy(v.array.copy()) for k, v in state.items() if k.startswith("backbone.")}
    for k, v in state.items():
        if k.startswith(("downstream_head.mlp_classif.", "downstream_head.mlp_offset.")):
            mhmr["module." + k[len("downstream_head.") :]] = torch.from_numpy(v.array.copy())
    mhmr["module.x_attention_head.transformer.w"] = torch.zeros(3)  # Multi-HMR's own head: not part of Human3R
    torch.save({"model_state_dict": mhmr, "epoch": 1}, path)
    return mhmr
