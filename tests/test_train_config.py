"""The train command's refusals: every bad config value, missing input and unusable workdir is one
clear error, raised before SMPL-X or any model is loaded, and leaves no workdir behind. Nothing here
builds a model (a stub fails the test if one is), so the file runs in seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from human3r_jax import checkpoint as ckpt
from human3r_jax.cli import main
from human3r_jax.data.bedlam import DataError
from human3r_jax.train import tblog
from human3r_jax.train import trainer as trainer_module
from human3r_jax.train.config import RULES, ConfigError, TrainConfig, apply_overrides, load_config, validate
from human3r_jax.train.trainer import Trainer, TrainError

BASE = load_config("tiny_synthetic")  # random_init=True, batch_size=2, epochs=4, lr=1e-3, eval_every=20
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def bad(key: str, text: str, value, **others):
    """A bad value of `key`: as `--set key=text` and as TrainConfig(key=value), with `others` set too."""
    overrides = [f"{k}={v}" for k, v in others.items()] + [f"{key}={text}"]
    return pytest.param(key, overrides, {**others, key: value}, id=f"{key}={text}")


BAD = [
    bad("model", "bogus", "bogus"),
    bad("model", "cut3r_tiny", "cut3r_tiny"),  # a CUT3R preset: no human heads
    bad("init_cut3r", "", 3),
    bad("init_multihmr", "", ""),
    bad("init", "/ckpt", "/ckpt", init_cut3r="/cut3r.pth"),  # two initialisations: which one?
    bad("random_init", "1", "yes"),
    bad("random_init", "True", True, init_cut3r="/cut3r.pth"),  # random weights and a file
    bad("smplx", "", ""),
    bad("trainable_params", "()", ()),  # nothing to train
    bad("trainable_params", "('^human[',)", ("^human[",)),  # not a regular expression
    bad("fixed_params", "'^decoder'", "^decoder"),  # a string, not a tuple of them
    bad("frozen_params", "(1,)", (1,)),
    bad("data_root", "", 0),
    bad("split", "Validation", "Validation"),
    bad("num_views", "0", 1),
    bad("max_humans", "0", 0),
    bad("resolutions", "()", ()),
    bad("resolutions", "(512, 384)", (512, 384)),  # one pair, not a tuple of pairs
    bad("resolutions", "((50, 48),)", ((50, 48),)),  # not a multiple of the patch size 16
    bad("resolutions", "((0, 48),)", [(64, 48)]),
    bad("aug_crop", "-1", -1),
    bad("batch_size", "0", 0),
    bad("samples_per_epoch", "1", 1),  # less than one batch: no step
    bad("prefetch", "-1", -1),
    bad("epochs", "0", 0),
    bad("warmup_epochs", "5", 5.0),  # more than the 4 epochs
    bad("warmup_epochs", "-1", float("nan")),
    bad("lr", "0", 0.0),
    bad("lr", "1e999", float("inf")),
    bad("min_lr", "0.01", 0.01),  # above lr
    bad("min_lr", "-1e-5", -1e-5),
    bad("weight_decay", "-0.1", -0.1),
    bad("b1", "1.0", 1.0),
    bad("b2", "-0.1", "0.95"),
    bad("clip_norm", "0", 0.0),
    bad("fixed_grads", "often", "often"),
    bad("conf_alpha", "0", -1.0),
    bad("compute_dtype", "float16", "float16"),
    bad("remat", "1", 1),
    bad("data_parallel", "None", None),
    bad("data_source", "parquet", "parquet"),
    bad("tfds_dir", "", ""),
    bad("fsdp", "1", 1),
    bad("eval_every", "-1", -1),
    bad("eval_samples", "1", 1),  # less than one batch with eval_every > 0
    bad("eval_samples", "0", 0, eval_every=0),
    bad("eval_split", "", ""),
    bad("eval_resolution", "(64,)", (64,)),
    bad("eval_resolution", "(65, 48)", ((64, 48),)),
    bad("eval_seed", "-1", -1),
    bad("seed", "1.5", -1),
    bad("workdir", "None", None),
    bad("workdir", "", ""),
    bad("max_steps", "0", 0),
    bad("save_every", "0", 0),
    bad("keep", "0", 0),
    bad("keep_period", "0", 0),
    bad("log_every", "0", 0),
]


class Reached(Exception):
    """Raised by the stubs of the slow steps: the run got past every check."""


@pytest.fixture
def no_model(monkeypatch):
    """SMPL-X loading, model building and initialisation replaced by stubs raising Reached."""

    def stub(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(trainer_module, "load_smplx", stub)
    monkeypatch.setattr(ckpt, "abstract_model", stub)
    monkeypatch.setattr(trainer_module, "init_params", stub)


def test_every_field_has_a_rule_and_a_bad_case():
    assert list(RULES) == FIELDS  # in field order: a rule may use the fields before it
    assert {case.values[0] for case in BAD} == set(FIELDS)


def test_defaults_and_bundled_configs_are_valid():
    assert validate(TrainConfig()) == TrainConfig()
    assert validate(load_config("human3r_bedlam")) == load_config("human3r_bedlam")
    assert apply_overrides(BASE, []) == BASE


def test_config_file_is_validated_when_loaded(tmp_path):
    path = tmp_path / "my_run.py"
    path.write_text(
        "from human3r_jax.train.config import TrainConfig\n\n\n"
        "def get_config():\n    return TrainConfig(batch_size=0)\n"
    )
    with pytest.raises(ConfigError, match="^batch_size=0: must be an integer at least 1$"):
        load_config(str(path))


def test_parameter_groups_are_overridable():
    cfg = apply_overrides(BASE, [r"frozen_params=('^encoder\\.', '^backbone\\.')", "fixed_params=()"])
    assert cfg.frozen_params == (r"^encoder\.", r"^backbone\.") and cfg.fixed_params == ()
    with pytest.raises(
        ConfigError,
        match=r"^trainable_params=\('\^human\[',\): .*: '\^human\[' is not a regular "
        r"expression \(unterminated character set",
    ):
        apply_overrides(BASE, ["trainable_params=('^human[',)"])


@pytest.mark.parametrize("key, overrides, values", BAD)
def test_bad_override_names_the_key(key, overrides, values):
    with pytest.raises(ConfigError) as e:
        apply_overrides(BASE, overrides)
    message = str(e.value)
    # the value's rule, or the literal's type (`--set key=text: expected int`)
    assert message.startswith((f"{key}=", f"--set {key}=")) and "\n" not in message, message


@pytest.mark.parametrize("key, overrides, values", BAD)
def test_bad_value_stops_the_trainer_first(key, overrides, values, no_model, tmp_path):
    cfg = dataclasses.replace(BASE, **{"workdir": str(tmp_path / "w"), **values})
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    assert str(e.value).startswith(f"{key}="), str(e.value)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("setting", ["batch_size=0", "num_views=0", "model=bogus", "workdir=None", "resolutions=()"])
def test_train_command_refuses_a_bad_value_in_one_line(setting, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # tiny_synthetic's workdir is relative: runs/tiny
    assert main(["train", "--config", "tiny_synthetic", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"human3r-jax train: error: {setting.split('=')[0]}=") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def make_split(root: Path, split: str, frames: int = 4) -> None:
    """One sequence in the preprocessed layout; the index reads only folder and file names."""
    seq = root / split / "scene_seq_000000"
    for sub in ("rgb", "depth", "mask", "cam", "smpl"):
        (seq / sub).mkdir(parents=True)
    for i in range(frames):
        (seq / "rgb" / f"{i:04d}.png").touch()


@pytest.fixture
def inputs(tmp_path):
    """A config whose every input exists (stand-in files: nothing is read past the checks)."""
    for split in ("Training", "Test"):
        make_split(tmp_path / "data", split)
    make_split(tmp_path / "train_only", "Training")
    make_split(tmp_path / "test_only", "Test")
    for name in ("SMPLX_NEUTRAL.npz", "cut3r.pth", "multiHMR.pt"):
        (tmp_path / name).touch()
    return dataclasses.replace(
        BASE,
        data_root=str(tmp_path / "data"),
        smplx=str(tmp_path / "SMPLX_NEUTRAL.npz"),
        workdir=str(tmp_path / "runs" / "w"),
    )


def test_valid_inputs_pass_the_checks(inputs, no_model, tmp_path):
    with pytest.raises(Reached):
        Trainer(inputs)
    # without evaluation, the Test split is not needed
    with pytest.raises(Reached):
        Trainer(dataclasses.replace(inputs, data_root=str(tmp_path / "train_only"), eval_every=0))
    assert not (tmp_path / "runs").exists()


MISSING = [
    pytest.param({"data_root": "{tmp}/nowhere"}, DataError, "nowhere does not exist", id="data_root"),
    pytest.param({"data_root": None}, TrainError, "set data_root", id="no data_root"),
    pytest.param({"data_root": "{tmp}/test_only"}, DataError, "Training: split folder missing", id="split"),
    pytest.param({"data_root": "{tmp}/train_only"}, DataError, "Test: split folder missing", id="eval split"),
    pytest.param({"smplx": "{tmp}/smplx"}, TrainError, "smplx=.*/smplx: no such file or folder", id="smplx"),
    pytest.param({"smplx": None}, TrainError, "set smplx", id="no smplx"),
    pytest.param({"random_init": False}, TrainError, "set init_cut3r and init_multihmr", id="no init"),
    pytest.param(
        {"random_init": False, "init_cut3r": "{tmp}/gone.pth", "init_multihmr": "{tmp}/multiHMR.pt"},
        TrainError,
        "init_cut3r=.*/gone.pth: no such file or folder",
        id="init_cut3r",
    ),
    pytest.param(
        {"random_init": False, "init_cut3r": "{tmp}/cut3r.pth", "init_multihmr": "{tmp}/gone.pt"},
        TrainError,
        "init_multihmr=.*/gone.pt: no such file or folder",
        id="init_multihmr",
    ),
    pytest.param({"random_init": False, "init": "{tmp}/gone"}, TrainError, "init=.*/gone: no such", id="init"),
    pytest.param(
        {"random_init": False, "init": "{tmp}/data"},
        ckpt.CheckpointFormatError,
        "data: not a human3r-jax checkpoint",
        id="init not a checkpoint",
    ),
]


@pytest.mark.parametrize("changes, error, message", MISSING)
def test_missing_input_stops_the_trainer_before_the_model(changes, error, message, inputs, no_model, tmp_path):
    changes = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(error, match=message):
        Trainer(dataclasses.replace(inputs, **changes))
    assert not (tmp_path / "runs").exists()


def test_train_command_reports_a_missing_input_in_one_line(inputs, capsys, tmp_path):
    args = [
        "train",
        "--config",
        "tiny_synthetic",
        "--set",
        f"data_root={tmp_path / 'nowhere'}",
        "--set",
        f"smplx={inputs.smplx}",
        "--set",
        f"workdir={inputs.workdir}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("human3r-jax train: error: ") and "nowhere" in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda w: w.touch(), r"w: .*/w exists and is not a folder"),
        (lambda w: (w.parent.rmdir(), w.parent.touch()), r"/runs exists and is not a folder"),
        (lambda w: (w.mkdir(), (w / "checkpoints").touch()), r"checkpoints: not a folder"),
        (lambda w: (w.mkdir(), (w / "logs").touch()), r"logs: not a folder"),
        (
            lambda w: ((w / "checkpoints").mkdir(parents=True), (w / "checkpoints" / "model.pt").touch()),
            r"checkpoints: not a human3r-jax training checkpoint folder \(it holds model.pt\)",
        ),
    ],
    ids=["file", "parent file", "checkpoints file", "logs file", "foreign checkpoints"],
)
def test_unusable_workdir_is_refused_and_kept(make, message, inputs, no_model):
    workdir = Path(inputs.workdir)
    workdir.parent.mkdir()
    make(workdir)
    before = sorted(workdir.parent.parent.rglob("*"))
    with pytest.raises(TrainError, match=message):
        Trainer(inputs)
    assert sorted(workdir.parent.parent.rglob("*")) == before


def test_read_only_place_for_the_workdir_is_refused(inputs, no_model, monkeypatch, tmp_path):
    monkeypatch.setattr(trainer_module.os, "access", lambda path, mode: False)  # tests may run as root
    with pytest.raises(TrainError, match=f"runs/w: {tmp_path} is not writable"):
        Trainer(inputs)


def test_resumable_workdir_passes(inputs, no_model):
    """An earlier run's workdir: step folders (and orbax's unfinished one) in checkpoints/."""
    ckpts = Path(inputs.workdir) / "checkpoints"
    for name in ("20", "40", "60.orbax-checkpoint-tmp-1712345678"):
        (ckpts / name).mkdir(parents=True)
    with pytest.raises(Reached):
        Trainer(inputs)


def test_failed_workdir_setup_removes_only_what_it_made(monkeypatch, tmp_path):
    """The checkpoint manager and the TensorBoard writer create the workdir last; if the writer
    fails, the folders made for it go again, and a folder of the user's stays as it was."""

    def broken(logdir):
        raise OSError("no TensorBoard today")

    monkeypatch.setattr(tblog, "TensorBoardWriter", broken)
    trainer = object.__new__(Trainer)  # past the checks and the model: only the last step runs here
    trainer.cfg = BASE
    for workdir in (tmp_path / "new" / "runs" / "w", tmp_path / "mine"):
        trainer.workdir = workdir
        with pytest.raises(OSError, match="no TensorBoard today"):
            trainer.open_workdir(log_to_tensorboard=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OSError):
        trainer.open_workdir(log_to_tensorboard=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    trainer.open_workdir(log_to_tensorboard=False)
    assert (tmp_path / "mine" / "checkpoints").is_dir() and trainer.writer is None
