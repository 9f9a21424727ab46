"""The torch-free converter: complete key coverage, and a clear error for every kind of bad file."""

import ast
import io
import pickle
import struct
import zipfile

import numpy as np
import pytest
from conftest import TINY_DINO, shared_path, write_multihmr

from human3r_jax import checkpoint as ckpt
from human3r_jax.config import dino_preset, preset
from human3r_jax.converters.constructor import ConstructorError, parse_constructor
from human3r_jax.converters.convert import (
    convert_file,
    convert_multihmr_file,
    convert_state_dict,
    model_config,
    read_official,
    resized_shapes,
    rules_for,
)
from human3r_jax.converters.rules import ConversionError, cut3r_config_from_args, plan_mapping
from human3r_jax.converters.torch_zip import Opaque, read_checkpoint

torch = pytest.importorskip("torch")


def read_listing(name):
    """(constructor, {key: shape}) of a `*_state_dict_shapes.txt` listing."""
    lines = shared_path("spec", name).read_text().splitlines()
    constructor = next(line.split("constructor: ", 1)[1] for line in lines if line.startswith("# constructor:"))
    shapes = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            shapes[key] = ast.literal_eval(shape)
    return constructor, shapes


# (listing, entries, aliases, official parameter count, DINOv2 width and grid side or None)
LISTINGS = [
    ("cut3r_state_dict_shapes.txt", 1248, 12, 793_307_858, None),
    ("cut3r_224_linear_state_dict_shapes.txt", 1056, 0, 748_443_655, None),
    ("human3r_state_dict_shapes.txt", 1631, 12, 1_167_461_358, (1024, 64)),
    ("human3r_672S_state_dict_shapes.txt", 1463, 12, 848_016_494, (384, 48)),
    ("human3r_tiny_state_dict_shapes.txt", 675, 12, None, (64, 8)),
]


@pytest.mark.parametrize("listing,n_keys,n_aliases,n_params,dino", LISTINGS)
def test_released_listings_map_completely(listing, n_keys, n_aliases, n_params, dino):
    constructor, shapes = read_listing(listing)
    assert len(shapes) == n_keys
    override = TINY_DINO if "tiny" in listing else None
    cfg = model_config(parse_constructor(constructor), shapes, override)
    target = ckpt.param_shapes(ckpt.abstract_model(cfg))
    plan = plan_mapping(resized_shapes(shapes, cfg), target, rules_for(cfg), listing)
    used = {key for key, _ in plan.moves.values()} | {a for a, _ in plan.aliases}
    assert used == set(shapes)  # every key used …
    assert len(plan.moves) == len(target) == n_keys - n_aliases  # … once, and every parameter filled
    assert len(plan.aliases) == n_aliases
    total = sum(int(np.prod(s)) for s in target.values())
    if dino is None:
        assert total == n_params
    elif n_params is not None:
        # ours stores the DINOv2 position table resized to the model's grid (1 + g² rows, not 1 + 37²)
        # and the 352 buffer values of the SMPL-X head's initial parameters as leaves
        d, g = dino
        assert total == n_params + d * ((1 + g * g) - (1 + 37 * 37)) + 352


@pytest.fixture(scope="module")
def tiny_official():
    path = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    state, constructor = read_official(path)
    return path, {k: v.array for k, v in state.items()}, constructor


def save_pth(path, state, constructor, **extra):
    torch.save(
        {
            "args": {"model": constructor},
            "model": {k: torch.from_numpy(np.array(v)) for k, v in state.items()},
            **extra,
        },
        path,
    )
    return path


def test_fixture_converts_and_aliases_share_storage(tiny_official):
    path, state, _ = tiny_official
    cfg, params, _constructor = convert_file(path)
    flat = ckpt.flatten(params)
    assert len(flat) == len(state) - 12
    np.testing.assert_array_equal(flat["encoder.blocks.0.attn.qkv.kernel"], state["enc_blocks.0.attn.qkv.weight"].T)
    np.testing.assert_array_equal(
        flat["head.dpt_self.layer_rn.2.kernel"],
        state["downstream_head.dpt_self.scratch.layer3_rn.weight"].transpose(2, 3, 1, 0),
    )
    assert cfg.dpt_layer_dims == (8, 16, 32, 64) and cfg.dpt_feature_dim == 32 and cfg.dpt_last_dim == 16


def test_reader_equals_torch_on_a_torch_written_file(tmp_path, tiny_official):
    _, state, constructor = tiny_official
    path = save_pth(tmp_path / "re.pth", state, constructor, epoch=3)
    obj = read_checkpoint(path)
    assert obj["epoch"] == 3
    ref = torch.load(path, weights_only=True)["model"]
    for k, t in ref.items():
        np.testing.assert_array_equal(obj["model"][k].array, t.numpy())


def test_state_dict_loaded_with_torch_and_module_prefix(tmp_path, tiny_official):
    path, state, constructor = tiny_official
    _, ref, _ = convert_file(path)
    tensors = {"module." + k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    _cfg, params = convert_state_dict(tensors, constructor)
    for k, v in ckpt.flatten(ref).items():
        np.testing.assert_array_equal(ckpt.flatten(params)[k], v)


def test_truncated_and_corrupted_files_are_refused(tmp_path, tiny_official):
    path = tiny_official[0]
    data = path.read_bytes()
    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated.pth"):
        convert_file(trunc)
    bad = bytearray(data)
    with zipfile.ZipFile(path) as zf:  # flip a byte inside the first tensor storage
        info = next(i for i in zf.infolist() if "/data/" in i.filename)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    off = info.header_offset + 30 + name_len + extra_len + 8
    bad[off] ^= 0xFF
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(ConversionError, match="corrupt.pth"):
        convert_file(corrupt)
    with pytest.raises(ConversionError, match="no such file"):
        convert_file(tmp_path / "absent.pth")


def test_wrong_model_is_refused(tmp_path, tiny_official):
    _, state, constructor = tiny_official
    p = save_pth(tmp_path / "dust3r.pth", state, "AsymmetricCroCo3DStereo(pos_embed='RoPE100')")
    with pytest.raises(ConversionError, match=r"dust3r.pth.*ARCroco3DStereo"):
        convert_file(p)
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match=r"other.pth: no 'model' entry"):
        convert_file(tmp_path / "other.pth")
    # right class, wrong widths: every mismatch is reported, naming keys
    p = save_pth(tmp_path / "wide.pth", state, constructor.replace("dec_embed_dim=96", "dec_embed_dim=192"))
    with pytest.raises(ConversionError, match=r"wide.pth(.|\n)*mis-shaped(.|\n)*decoder_embed.weight"):
        convert_file(p)


def test_misshaped_missing_unexpected_and_alias_keys_are_named(tmp_path, tiny_official):
    _, state, constructor = tiny_official
    s = dict(state)
    s["dec_blocks.1.mlp.fc1.weight"] = np.zeros((5, 5), np.float32)
    del s["pose_retriever.mem"]
    s["extra_head.weight"] = np.zeros(3, np.float32)
    s["downstream_head.dpt_rgb.scratch.layer_rn.1.weight"] = s["downstream_head.dpt_rgb.scratch.layer_rn.1.weight"] + 1
    p = save_pth(tmp_path / "bad_keys.pth", s, constructor)
    with pytest.raises(ConversionError) as e:
        convert_file(p)
    msg = str(e.value)
    for needle in [
        "bad_keys.pth",
        "dec_blocks.1.mlp.fc1.weight: (5, 5)",
        "missing",
        "pose_retriever.mem",
        "extra_head.weight",
    ]:
        assert needle in msg, needle
    del s["extra_head.weight"], s["dec_blocks.1.mlp.fc1.weight"]
    s["dec_blocks.1.mlp.fc1.weight"] = state["dec_blocks.1.mlp.fc1.weight"]
    s["pose_retriever.mem"] = state["pose_retriever.mem"]
    p = save_pth(tmp_path / "alias.pth", s, constructor)
    with pytest.raises(ConversionError, match=r"broken alias(.|\n)*dpt_rgb.scratch.layer_rn.1.weight differs"):
        convert_file(p)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_untrusted_pickle_never_runs_code(tmp_path, monkeypatch, tiny_official):
    monkeypatch.chdir(tmp_path)
    _, _state, constructor = tiny_official
    p = tmp_path / "evil.pth"
    torch.save({"args": {"model": constructor}, "model": {}, "payload": _Evil()}, p, pickle_protocol=2)
    obj = read_checkpoint(p)
    assert isinstance(obj["payload"], Opaque) and obj["payload"].qualname in ("posix.system", "os.system")
    assert not (tmp_path / "PWNED").exists()
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"model": _Evil()}, protocol=2))
    (tmp_path / "evil2.pth").write_bytes(raw.getvalue())
    with pytest.raises(ConversionError, match="evil2.pth: 'model' is a Opaque"):
        convert_file(tmp_path / "evil2.pth")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "text",
    [
        "ARCroco3DStereo(ARCroco3DStereoConfig(enc_depth=__import__('os').system('touch x')))",
        "ARCroco3DStereo(ARCroco3DStereoConfig(**{'a': 1}))",
        "ARCroco3DStereo(ARCroco3DStereoConfig(x=(lambda: 1)()))",
        "ARCroco3DStereo(ARCroco3DStereoConfig(enc_depth=1)); import os",
    ],
)
def test_constructor_parser_accepts_only_literals(text):
    with pytest.raises(ConstructorError):
        parse_constructor(text)


def test_constructor_parser_values():
    kw = parse_constructor("ARCroco3DStereo(ARCroco3DStereoConfig(a=1, b='x', c=(1, -inf, inf), d=True, e=[1.5]))")
    assert kw == {"a": 1, "b": "x", "c": (1, -float("inf"), float("inf")), "d": True, "e": [1.5]}


def test_unsupported_config_is_refused():
    with pytest.raises(ConversionError, match="depth_mode"):
        cut3r_config_from_args(
            {
                "head_type": "dpt",
                "pose_head": True,
                "output_mode": "pts3d+pose",
                "pos_embed": "RoPE100",
                "depth_mode": ("square", -1, 1),
            },
            {},
        )
    with pytest.raises(ConversionError, match="not understood"):
        cut3r_config_from_args({"warp_speed": 9}, {})


def test_human3r_needs_known_backbone_widths(tiny_official):
    path = shared_path("fixtures", "human3r_tiny", "checkpoint.pth")
    with pytest.raises(ConversionError, match=r"dinov2_tiny14.*not a known DINOv2.*widths"):
        convert_file(path)
    with pytest.raises(ConversionError, match="mis-shaped"):  # widths that do not fit the tensors
        convert_file(path, dino_preset("dinov2_vits14"))


def test_multihmr_checkpoint_initialises_backbone_and_detector(tmp_path):
    """A Multi-HMR checkpoint (its own key names, extra modules) → our backbone and detection MLPs."""
    cfg, params, _ = convert_file(shared_path("fixtures", "human3r_tiny", "checkpoint.pth"), TINY_DINO)
    mhmr = write_multihmr(tmp_path / "multiHMR.pt")
    init = ckpt.flatten(convert_multihmr_file(tmp_path / "multiHMR.pt", cfg))
    ref = ckpt.flatten(params)
    assert set(init) == {k for k in ref if k.startswith(("backbone.", "human.mlp_classif.", "human.mlp_offset."))}
    for k, v in init.items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)
    del mhmr["module.mlp_offset.2.weight"]
    torch.save({"model_state_dict": mhmr}, tmp_path / "broken.pt")
    with pytest.raises(ConversionError, match=r"broken.pt(.|\n)*missing(.|\n)*human.mlp_offset.fc2.kernel"):
        convert_multihmr_file(tmp_path / "broken.pt", cfg)
    with pytest.raises(ConversionError, match="model_state_dict"):
        torch.save({"weights": {}}, tmp_path / "none.pt")
        convert_multihmr_file(tmp_path / "none.pt", preset("human3r_tiny"))
