"""`human3r-jax evaluate human` end to end on tiny synthetic datasets in the official layouts (3DPW raw and
prepared, EMDB, RICH) with the random tiny Human3R and synthetic body models (224 rule, so that compilation
stays short): metrics.json with every metric, re-runs skip, an interrupted run resumes, --rescore needs no
model, bad inputs are one line with exit 2; and the scoring wired end to end on predictions equal to the GT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_human_datasets import write_3dpw_raw, write_emdb, write_rich

from human3r_jax import cli
from human3r_jax.evaluation import body_models as bm
from human3r_jax.evaluation import human, human_data, runner

MODEL = ["--random-weights", "human3r_tiny", "--size", "224", "--quiet"]
ROW_KEYS = {
    "n_human",
    "pve",
    "pa_pve",
    "metric_pve",
    "mpjpe",
    "pa_mpjpe",
    "metric_mpjpe",
    "root_error",
    "w_mpjpe",
    "wa_mpjpe",
    "rte",
    "rte_scaled",
    "jitter",
    "foot_sliding",
    "precision",
    "recall",
    "f1",
}


def run_cli(argv, capsys):
    code = cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, [line for line in cap.err.splitlines() if line.strip() and "RANDOM WEIGHTS" not in line]


@pytest.fixture(scope="module")
def models(body_models_root):
    return {d: bm.load_body_models(body_models_root, d) for d in ("3dpw", "emdb2", "rich")}


def _entry(out, dataset):
    return json.loads((out / "metrics.json").read_text())["results"][f"human/{dataset}"]


def test_3dpw_raw_release_end_to_end_and_rerun_skips(tmp_path, capsys, monkeypatch, body_models_root):
    root = tmp_path / "3DPW"
    write_3dpw_raw(root, seed=0)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "human",
        "--dataset",
        "3dpw",
        "--root",
        str(root),
        "--body-models",
        str(body_models_root),
        "--out",
        str(out),
        *MODEL,
    ]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    entry = _entry(out, "3dpw")
    assert set(entry["mean"]) >= ROW_KEYS
    assert entry["settings"]["reset_interval"] == 100 and entry["settings"]["ttt3r"] and entry["quirks"] == "official"
    assert list(entry["sequences"]) == entry["sequences_listed"] and len(entry["sequences"]) == 2
    for row in entry["sequences"].values():
        assert set(row) >= ROW_KEYS
        assert row["count"] > 0  # every annotated frame's people were counted (matched or missed)
    assert (out / "3dpw" / "3dpw_test.pkl").is_file()  # the prepared annotations, cached
    assert "### human — 3dpw" in stdout

    # a re-run runs no model and prepares nothing: same numbers
    monkeypatch.setattr(human_data, "prepare_3dpw", lambda *a, **k: pytest.fail("prepared again"))
    monkeypatch.setattr(runner, "run_frames", lambda *a, **k: pytest.fail("ran the model again"))
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert _entry(out, "3dpw")["mean"] == entry["mean"]
    code, _, err = run_cli(argv[: -len(MODEL)] + ["--rescore", "--quiet", "--fix-quirks"], capsys)
    assert code == 0, err
    assert _entry(out, "3dpw")["quirks"] == "fixed"


def test_3dpw_prepared_file_matches_the_raw_release(tmp_path, capsys, body_models_root, models):
    raw = tmp_path / "3DPW"
    write_3dpw_raw(raw, seed=0)
    annots = human_data.prepare_3dpw(raw, models["3dpw"].smpl["male"], models["3dpw"].smpl["female"])
    human_data.save_3dpw_annotations(raw / "3dpw_test.pkl", annots)
    from_file = human_data.list_sequences(
        "3dpw", raw, annotations=human_data.read_3dpw_annotations(human_data.find_3dpw_annotations(raw))
    )
    from_raw = human_data.list_sequences("3dpw", raw, annotations=annots)
    assert [s.name for s in from_file] == [s.name for s in from_raw]
    for a, b in zip(from_file, from_raw):
        assert a.frames == b.frames
        np.testing.assert_array_equal(a.params["transl"], b.params["transl"])


def test_emdb2_global_metrics_and_interrupted_run_resumes(tmp_path, capsys, body_models_root):
    names = human_data.EMDB_SEQUENCES[2][:2]
    root = tmp_path / "EMDB"
    write_emdb(root, 2, seed=1, sequences=names)
    out = tmp_path / "eval"
    done = []

    def interrupt(name):
        done.append(name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        human.evaluate(
            "emdb2",
            root,
            out,
            body_models=body_models_root,
            random_weights="human3r_tiny",
            size=224,
            sequences=list(names),
            progress=False,
            on_sequence=interrupt,
            print_table=False,
        )
    assert len(done) == 1 and runner.cache_path(out / "emdb2", done[0]).is_file()
    entry = human.evaluate(
        "emdb2",
        root,
        out,
        body_models=body_models_root,
        random_weights="human3r_tiny",
        size=224,
        sequences=list(names),
        progress=False,
        on_sequence=done.append,
        print_table=False,
    )
    assert done[1:] == [names[1]]  # only the missing sequence ran
    assert entry["settings"]["reset_interval"] == 50
    assert set(entry["mean"]) >= ROW_KEYS and list(entry["sequences"]) == list(names)


def test_rich_end_to_end(tmp_path, capsys, body_models_root):
    root = tmp_path / "RICH"
    write_rich(root, seed=2)
    out = tmp_path / "eval"
    code, _, err = run_cli(
        [
            "evaluate",
            "human",
            "--dataset",
            "rich",
            "--root",
            str(root),
            "--body-models",
            str(body_models_root),
            "--out",
            str(out),
            *MODEL,
        ],
        capsys,
    )
    assert code == 0, err
    entry = _entry(out, "rich")
    assert entry["settings"]["reset_interval"] is None and set(entry["mean"]) >= ROW_KEYS


# ---------------------------------------------------------------- scoring wired end to end


def _perfect_cache(seq, models, hw=(224, 224)):
    """A cache whose detections are exactly the GT people (through `predicted_vertices`, patched), with the GT
    camera poses and the GT focal."""
    rows, cam, _ = human.gt_vertices(models, seq, fix_quirks=True)
    K = human.gt_intrinsics(seq, hw, 224, fix_quirks=False)
    n = len(rows)
    return {
        "frame_name": np.asarray([f.name for f in seq.frames]),
        "c2w": np.linalg.inv(seq.T_w2c),
        "focal": K[:, 0, 0].astype(np.float32),
        "image_hw": np.asarray(hw),
        "person_frame": rows[:, 0],
        "rotmat": np.zeros((n, 53, 3, 3)),
        "shape": np.zeros((n, 10)),
        "expression": np.zeros((n, 10)),
        "transl": np.zeros((n, 3)),
    }, cam


@pytest.mark.parametrize("dataset", ["emdb2", "rich"])
def test_predictions_equal_to_the_gt_score_zero(tmp_path, monkeypatch, models, dataset):
    root = tmp_path / "d"
    if dataset == "emdb2":
        write_emdb(root, 2, seed=3, sequences=human_data.EMDB_SEQUENCES[2][:1])
    else:
        write_rich(root, seed=3)
    only = human_data.EMDB_SEQUENCES[2][:1] if dataset == "emdb2" else None
    seq = human_data.list_sequences(dataset, root, only=only)[0]
    cache, cam = _perfect_cache(seq, models[dataset])
    monkeypatch.setattr(human, "predicted_vertices", lambda m, c: cam + np.asarray([0.0, 0.0, 0.0]))
    row = human.score_sequence(seq, cache, models[dataset], dataset, 224, fix_quirks=True)
    assert row["n_human"] == len(seq.frames) and row["precision"] == row["recall"] == 100.0
    for k in ("mpjpe", "pa_mpjpe", "pve", "metric_mpjpe", "root_error", "wa_mpjpe", "w_mpjpe", "rte"):
        assert row[k] == 0.0, k
    # a 5 cm shift of every prediction: 50 mm metric errors, none once centred
    monkeypatch.setattr(human, "predicted_vertices", lambda m, c: cam + np.asarray([0.05, 0.0, 0.0]))
    row = human.score_sequence(seq, cache, models[dataset], dataset, 224, fix_quirks=True)
    assert row["metric_mpjpe"] == 50.0 and row["root_error"] == 50.0 and row["mpjpe"] == 0.0


def test_3dpw_quirk_q1_scores_women_against_a_male_body(tmp_path, models):
    raw = tmp_path / "3DPW"
    write_3dpw_raw(raw, seed=0)
    m = models["3dpw"]
    seqs = human_data.list_sequences(
        "3dpw", raw, annotations=human_data.prepare_3dpw(raw, m.smpl["male"], m.smpl["female"])
    )
    seq = next(s for s in seqs if (s.gender == 2).any())
    rows, official, _ = human.gt_vertices(m, seq, fix_quirks=False)
    _, fixed, _ = human.gt_vertices(m, seq, fix_quirks=True)
    female = seq.gender[rows[:, 0], rows[:, 1]] == 2
    slots = set(rows[female, 1])
    differs = np.abs(official - fixed).max(axis=(1, 2)) > 1e-9
    # official: rows 0/1 (by slot) take the female model, every other woman keeps the male body
    assert set(np.flatnonzero(differs)) == ({r for r in range(len(rows)) if female[r]} - slots) | (
        {s for s in slots if s < len(rows) and not female[s]}
    )


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys, body_models_root):
    root = tmp_path / "EMDB"
    write_emdb(root, 1, seed=4, sequences=human_data.EMDB_SEQUENCES[1][:1])
    one = ["--sequences", human_data.EMDB_SEQUENCES[1][0]]
    base = ["evaluate", "human", "--dataset", "emdb1", "--root", str(root), "--out", str(tmp_path / "o"), *MODEL]
    cases = [
        (base, "--body-models"),  # not given
        (base + ["--body-models", str(tmp_path / "nowhere")], "nowhere"),
        (base + ["--body-models", str(body_models_root), "--sequences", "P0/not_a_sequence"], "not_a_sequence"),
        (base + ["--body-models", str(body_models_root), "--align", "scale"], "--align"),
        (base + ["--body-models", str(body_models_root), "--sequences", " , "], "no sequence name"),
        (
            [
                "evaluate",
                "human",
                "--dataset",
                "emdb1",
                "--root",
                str(next(root.rglob("*.pkl"))),
                "--out",
                str(tmp_path / "o4"),
                "--body-models",
                str(body_models_root),
                *MODEL,
            ],
            "a file",
        ),
        (
            [
                "evaluate",
                "depth",
                "--dataset",
                "bonn",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "o2"),
                "--body-models",
                str(body_models_root),
                *MODEL,
            ],
            "--body-models",
        ),
        (
            [
                "evaluate",
                "human",
                "--dataset",
                "emdb1",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "o3"),
                "--body-models",
                str(body_models_root),
                "--random-weights",
                "cut3r_tiny",
                "--size",
                "224",
                "--quiet",
                *one,
            ],
            "Human3R",
        ),
    ]
    for argv, needle in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and len(err) == 1 and needle in err[0], (argv, err)


def test_a_missing_body_model_file_is_named_with_its_source(tmp_path, capsys, body_models_root):
    import shutil

    partial = tmp_path / "models"
    shutil.copytree(body_models_root, partial, symlinks=True)
    victim = next(partial.rglob("SMPL_FEMALE.pkl"))
    victim.unlink()
    root = tmp_path / "EMDB"
    write_emdb(root, 1, seed=5, sequences=human_data.EMDB_SEQUENCES[1][:1])
    code, _, err = run_cli(
        [
            "evaluate",
            "human",
            "--dataset",
            "emdb1",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--body-models",
            str(partial),
            *MODEL,
            "--sequences",
            human_data.EMDB_SEQUENCES[1][0],
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "SMPL_FEMALE.pkl" in err[0] and "smpl.is.tue.mpg.de" in err[0], err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs were checked


def test_sequences_batched_over_devices_predict_what_they_predict_alone(tmp_path, monkeypatch, body_models_root):
    names = human_data.EMDB_SEQUENCES[1][:3]
    root = tmp_path / "EMDB"
    write_emdb(root, 1, seed=6, sequences=names, frames=4)
    run = {
        "body_models": body_models_root,
        "random_weights": "human3r_tiny",
        "size": 224,
        "sequences": list(names),
        "progress": False,
        "print_table": False,
    }
    alone = human.evaluate("emdb1", root, tmp_path / "alone", **run)
    batches = []
    real = runner.run_frames
    monkeypatch.setattr(runner, "_local_device_count", lambda: 2)  # two devices: sequences in pairs
    monkeypatch.setattr(runner, "run_frames", lambda m, frames, *a: (batches.append(len(frames)), real(m, frames, *a)))
    together = human.evaluate("emdb1", root, tmp_path / "together", **run)
    assert batches == [2, 1]
    assert together["sequences"] == alone["sequences"]
    for name in names:
        a = np.load(runner.cache_path(tmp_path / "alone" / "emdb1", name))
        b = np.load(runner.cache_path(tmp_path / "together" / "emdb1", name))
        np.testing.assert_array_equal(b["person_frame"], a["person_frame"])
        for k in ("c2w", "focal", "transl", "rotmat"):  # float32; a batch of 2 reorders XLA's reductions
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4, err_msg=k)
