"""Our checkpoint format: round trip, atomic writes, and clear errors."""

import json

import jax
import numpy as np
import pytest
from conftest import TINY
from flax import nnx

from human3r_jax import checkpoint as ckpt
from human3r_jax.outputs import OutputError


def test_save_load_round_trip(tmp_path):
    model = ckpt.abstract_model(TINY)
    params = ckpt.random_params(model, seed=3)
    out = ckpt.save(tmp_path / "ck", TINY, params, source={"file": "x.pth"})
    cfg, _graphdef, state = ckpt.load(out)
    assert cfg == TINY
    loaded = ckpt.flatten(nnx.to_pure_dict(state))
    for k, v in ckpt.flatten(params).items():
        np.testing.assert_array_equal(np.asarray(loaded[k]), v, err_msg=k)
    assert json.loads((out / "config.json").read_text())["source"] == {"file": "x.pth"}


def test_save_refuses_overwrite_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = ckpt.abstract_model(TINY)
    params = ckpt.random_params(model)
    ckpt.save(tmp_path / "ck", TINY, params)
    with pytest.raises(OutputError, match="ck: exists and is not empty"):
        ckpt.save(tmp_path / "ck", TINY, params)
    bad = dict(params, encoder={"oops": object()})
    with pytest.raises(ckpt.CheckpointFormatError, match="encoder.oops"):
        ckpt.save(tmp_path / "broken", TINY, bad)

    class Boom(Exception):
        pass

    def interrupted(*a, **k):  # a failure in the middle of writing
        raise Boom

    monkeypatch.setattr(ckpt.json, "dumps", interrupted)
    with pytest.raises(Boom):
        ckpt.save(tmp_path / "broken", TINY, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary or partial directory


def test_load_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointFormatError, match="no config.json.*human3r-jax convert"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointFormatError, match="invalid JSON"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "human3r-jax", "kind": "cut3r", "config": {"warp": 1}}))
    with pytest.raises(ckpt.CheckpointFormatError, match="unknown config fields"):
        ckpt.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "human3r-jax", **ckpt.config_to_json(TINY)}))
    with pytest.raises(ckpt.CheckpointFormatError, match="cannot restore"):
        ckpt.load(tmp_path)


def test_random_params_have_no_constants():
    flat = ckpt.flatten(ckpt.random_params(ckpt.abstract_model(TINY)))
    assert all(np.std(v) > 0 for v in flat.values() if v.size > 1)
    assert all(v.dtype == np.float32 for v in flat.values())
    assert len(jax.tree.leaves(flat)) == len(ckpt.param_shapes(ckpt.abstract_model(TINY)))
