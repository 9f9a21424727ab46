"""BEDLAM through TensorFlow Datasets: the TFDS build of a synthetic preprocessed layout gives batches
bit-identical to the files', and processes split a global batch between them."""

import pickle
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the TFDS dataset needs tensorflow-datasets (the train extra)")
pytest.importorskip("array_record", reason="TFDS's random access needs array-record (the train extra)")

from human3r_jax.data import bedlam as B
from human3r_jax.data.bedlam import tfds as T
from human3r_jax.data.bedlam.pipeline import open_index, process_samples
from human3r_jax.data.synthetic import make_synthetic_bedlam

RES = [(32, 24), (24, 32)]
PICKLED = "synth00_seq_000000"  # its labels as the official .pkl lists of per-person dicts


def _to_official_pickles(smpl_dir):
    for npz in sorted(smpl_dir.glob("*.npz")):
        with np.load(npz) as z:
            people = [{key: z[key][i] for key in z.files} for i in range(len(z["smplx_transl"]))]
        for person in people:
            person["smplx_gender"] = "neutral"
        with open(npz.with_suffix(".pkl"), "wb") as fh:
            pickle.dump(people, fh, protocol=2)
        npz.unlink()


@pytest.fixture(scope="module")
def layout(tmp_path_factory, smplx_root):
    root = tmp_path_factory.mktemp("bedlam_layout")
    make_synthetic_bedlam(root, smplx_root, n_train=3, n_test=1, frames=6, size=(48, 32), max_people=2, seed=0)
    _to_official_pickles(root / "Training" / PICKLED / "smpl")
    (root / "Training" / "scene_closeup_seq_000009").mkdir()  # officially excluded: never read
    return root


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, layout):
    out = tmp_path_factory.mktemp("bedlam_tfds")
    T.build(layout, out)
    return out


def _assert_identical(a, b, what):
    assert set(a) == set(b), what
    for k in a:
        assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, (what, k)
        assert np.array_equal(a[k], b[k]), (what, k)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


# ---------------------------------------------------------------- bit-identical batches


def test_same_index(layout, tfds_dir):
    for split, allow_repeat in (("Training", True), ("Test", False)):
        files = open_index("files", layout, split=split, allow_repeat=allow_repeat)
        stored = open_index("tfds", tfds_dir, split=split, allow_repeat=allow_repeat)
        assert isinstance(stored, T.TfdsIndex)
        assert [(s.name, s.frames) for s in stored.sequences] == [(s.name, s.frames) for s in files.sequences]
        assert stored.num_starts == files.num_starts and stored.min_frames == files.min_frames
    assert PICKLED in [s.name for s in B.BedlamIndex(layout).sequences]


def test_batches_bit_identical(layout, tfds_dir):
    """Training batches (tf.data, several steps, the .pkl labels included) and an evaluation batch."""
    kw = {"batch_size": 3, "seed": 7, "resolutions": RES, "num_parallel": 2}
    files, stored = B.BedlamIndex(layout), T.TfdsIndex(tfds_dir)
    seen = set()
    for step, (a, b) in enumerate(zip(B.iterate(files, **kw), B.iterate(stored, **kw))):
        _assert_identical(a, b, f"step {step}")
        seen.update(files.sequences[i].name for i in a["seq_index"])
        if step == 3:
            break
    assert PICKLED in seen and len(seen) >= 2

    ev = {"batch_size": 2, "seed": 1, "resolutions": [(24, 32)], "aug_crop": 0, "jitter": False}
    a = B.make_batch(B.BedlamIndex(layout, "Test", allow_repeat=False), step=0, **ev)
    b = B.make_batch(T.TfdsIndex(tfds_dir, "Test", allow_repeat=False), step=0, **ev)
    _assert_identical(a, b, "evaluation")


# ---------------------------------------------------------------- processes


class _Recorder:
    """A data source that records the record numbers read."""

    def __init__(self, source):
        self.source, self.read = source, []

    def __len__(self):
        return len(self.source)

    def __getitem__(self, number):
        self.read.append(number)
        return self.source[number]


def _recording_index(tfds_dir):
    index = T.TfdsIndex(tfds_dir)  # one per process, as each process opens its own
    store = index.sequences[0].path.store
    store.source = _Recorder(store.source)
    return index, store


def _records_of(index, store, batch):
    """The record numbers of every view of every sample of a batch."""
    return {
        store.locate(index.sequences[s].name, index.sequences[s].frames[f])
        for s, frames in zip(batch["seq_index"], batch["frame_ids"])
        for f in frames
    }


def test_two_processes_split_the_global_batch(tfds_dir):
    kw = {"seed": 3, "batch_size": 4, "resolutions": RES}
    whole_index, whole_store = _recording_index(tfds_dir)
    whole = B.make_batch(whole_index, step=2, **kw)
    parts, reads = [], []
    for p in range(2):
        index, store = _recording_index(tfds_dir)
        part = B.make_batch(index, step=2, process_index=p, process_count=2, **kw)
        assert len(part["seq_index"]) == 2
        # process p reads the frames of its own samples, all of them and nothing else
        assert set(store.source.read) == _records_of(index, store, part)
        parts.append(part)
        reads.append(set(store.source.read))
    assert reads[0] != reads[1]  # the step's samples differ (else the check above says little)
    assert reads[0] | reads[1] == set(whole_store.source.read)
    assert [list(process_samples(4, p, 2)) for p in range(2)] == [[0, 1], [2, 3]]
    joined = {k: np.concatenate([parts[0][k], parts[1][k]]) if np.ndim(whole[k]) else parts[0][k] for k in whole}
    _assert_identical(joined, whole, "2 processes")  # each sample of the global batch once, in order

    streamed = next(B.iterate(T.TfdsIndex(tfds_dir), start_step=2, process_index=1, process_count=2, **kw))
    _assert_identical(streamed, parts[1], "tf.data, process 1")


def test_batch_not_divisible_by_processes(tfds_dir):
    index = T.TfdsIndex(tfds_dir)
    with pytest.raises(B.DataError) as e:
        B.make_batch(index, seed=0, step=0, batch_size=3, resolutions=RES, process_index=1, process_count=2)
    assert "batch_size=3" in _one_line(e) and "2 processes" in str(e.value)
    with pytest.raises(B.DataError, match="batch_size=6 does not split evenly over 4 processes"):
        B.make_dataset(index, batch_size=6, seed=0, process_index=0, process_count=4)


# ---------------------------------------------------------------- bad input


def test_bad_manual_dir(tmp_path):
    with pytest.raises(B.DataError) as e:
        T.build(tmp_path / "absent", tmp_path / "out")
    assert "not a preprocessed BEDLAM layout" in _one_line(e) and "preprocess-bedlam" in str(e.value)
    (tmp_path / "layout" / "Training" / "s_seq_0" / "rgb").mkdir(parents=True)
    with pytest.raises(B.DataError) as e:
        T.build(tmp_path / "layout", tmp_path / "out")
    assert "s_seq_0: missing subfolder(s) depth, mask, cam, smpl" in _one_line(e)
    assert not any((tmp_path / "out").rglob("*.array_record*"))  # nothing that looks complete


def test_pickle_read_with_the_restricted_unpickler(tmp_path, layout):
    seq = tmp_path / "layout" / "Training" / PICKLED
    shutil.copytree(layout / "Training" / PICKLED, seq)
    marker = tmp_path / "pwned"
    with open(seq / "smpl" / "000003.pkl", "wb") as fh:  # what pickle.dump of os.system("touch …") writes
        fh.write(b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    with pytest.raises(B.DataError) as e:
        T.build(tmp_path / "layout", tmp_path / "out")
    assert "000003.pkl" in _one_line(e) and "refusing to load posix.system" in str(e.value)
    assert not marker.exists()


def test_bad_dataset(tmp_path, tfds_dir):
    with pytest.raises(B.DataError) as e:
        T.TfdsIndex(tmp_path)
    assert "no prepared bedlam_tfds dataset" in _one_line(e)
    with pytest.raises(B.DataError, match="data_source='tf'"):
        open_index("tf", tfds_dir)

    copy = tmp_path / "copy"
    shutil.copytree(tfds_dir, copy)
    shard = next(copy.rglob("bedlam_tfds-train.array_record-*"))
    shard.unlink()
    with pytest.raises(B.DataError) as e:
        T.TfdsIndex(copy)
    assert f"{shard}: shard missing" in _one_line(e)

    seq = T.TfdsIndex(tfds_dir).sequences[0]
    with pytest.raises(B.DataError) as e:
        B.read_rgb(seq.path / "rgb" / "999999.png")
    assert _one_line(e) == f"{T.open_builder(tfds_dir).data_path}[train]/{seq.name}/rgb/999999.png: no such file"
