"""Released weights by name (human3r_jax.weights), without the network: the hub path from a hand-made Hugging
Face cache (offline), the URL path against a local HTTP server, and the cache's rules (convert once, rebuild
what is not ours to trust, never touch what is not ours)."""

from __future__ import annotations

import dataclasses
import errno
import http.server
import json
import shutil
import threading
from pathlib import Path

import huggingface_hub
import pytest
from conftest import TINY_DINO, shared_path
from huggingface_hub import constants, errors
from huggingface_hub.utils import httpx

from human3r_jax import checkpoint as ckpt
from human3r_jax import weights
from human3r_jax.config import Cut3rConfig, Human3rConfig
from human3r_jax.converters import convert

HUMAN3R = "human3r_896L"
CUT3R = "cut3r_512_dpt_4_64"
REVISION = "0123456789abcdef0123456789abcdef01234567"
REAL_CONVERT = convert.convert_and_save


def one_line_error(match: str):
    return pytest.raises(weights.WeightsError, match=match)


def assert_one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def with_sha(monkeypatch, name: str, sha: str | None, source=None) -> None:
    release = weights.KNOWN[name]
    monkeypatch.setitem(weights.KNOWN, name, dataclasses.replace(release, sha256=sha, source=source or release.source))


@pytest.fixture(scope="module")
def human3r_pth():
    path = shared_path("fixtures", "human3r_tiny", "checkpoint.pth")
    return path, weights.sha256_file(path)


@pytest.fixture(scope="module")
def cut3r_pth():
    path = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    return path, weights.sha256_file(path)


@pytest.fixture(scope="module")
def human3r_converted(human3r_pth, tmp_path_factory):
    """The human3r_tiny fixture converted once, for the tests that only need some conversion to happen."""
    return REAL_CONVERT(human3r_pth[0], tmp_path_factory.mktemp("converted") / "h", dino=TINY_DINO)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("HUMAN3R_JAX_CACHE", str(root))
    for var in ("HUMAN3R_JAX_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def conversions(monkeypatch):
    """The real converter, counted. The tiny fixture's DINOv2 is no hub backbone: its widths are given here
    (the released files need none; CUT3R ignores them)."""
    calls = []

    def counted(path, out_dir, **_):
        calls.append(Path(path))
        return REAL_CONVERT(path, out_dir, dino=TINY_DINO)

    monkeypatch.setattr(convert, "convert_and_save", counted)
    return calls


@pytest.fixture
def copies(monkeypatch, human3r_converted):
    """A stand-in converter that copies the converted fixture (fast), counted."""
    calls = []

    def copy(path, out_dir, **_):
        calls.append(Path(path))
        shutil.copytree(human3r_converted, out_dir, dirs_exist_ok=True)
        return Path(out_dir)

    monkeypatch.setattr(convert, "convert_and_save", copy)
    return calls


@pytest.fixture
def no_conversion(monkeypatch):
    """A converter that must not be called: the calls, to be asserted empty."""
    calls = []
    monkeypatch.setattr(convert, "convert_and_save", lambda path, out_dir, **_: calls.append(path))
    return calls


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, cache, server):
    """An offline, empty Hugging Face cache; `.add(file, blob_name)` puts `file` in it as faneggg/human3r's
    human3r_896L.pth, in huggingface_hub's layout (blobs/, snapshots/<rev>/ links, refs/main). The hub's URLs
    lead to the local server (which knows no hub file): a request that should not happen is counted there and
    never reaches the network."""
    hub = tmp_path / "hf" / "hub"
    port = server.server_address[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}/hub")
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", f"http://127.0.0.1:{port}/hub/{{repo_id}}/{{filename}}"
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))  # read by huggingface_hub at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    class Cache:
        repo = hub / "models--faneggg--human3r"

        def add(self, file: Path, blob_name: str) -> Path:
            blob = self.repo / "blobs" / blob_name
            blob.parent.mkdir(parents=True)
            shutil.copyfile(file, blob)
            snapshot = self.repo / "snapshots" / REVISION
            snapshot.mkdir(parents=True)
            (snapshot / "human3r_896L.pth").symlink_to(Path("..", "..", "blobs", blob_name))
            (self.repo / "refs").mkdir()
            (self.repo / "refs" / "main").write_text(REVISION)
            return blob

    return Cache()


# ---- names and paths


def test_unknown_name_lists_the_known_ones(cache):
    with one_line_error("^human3r_999: no such checkpoint file or folder, and not a released name") as e:
        weights.resolve("human3r_999")
    assert assert_one_line(e).endswith("known names: " + ", ".join(weights.KNOWN))
    assert list(weights.KNOWN)[:4] == ["human3r_672S", "human3r_672B", "human3r_672L", "human3r_896L"]


@pytest.mark.parametrize("hostile", ["../human3r_896L", "human3r_896L/../human3r_896L", "/nowhere/human3r_896L", ""])
def test_paths_that_look_like_names_never_reach_the_cache(cache, no_conversion, hostile):
    with one_line_error("no such checkpoint file or folder, and not a released name"):
        weights.resolve(hostile)
    assert not cache.exists() and no_conversion == []


def test_an_existing_path_wins_over_a_name(cache, no_conversion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / HUMAN3R).mkdir()
    (tmp_path / "model.pth").write_bytes(b"x")
    assert weights.resolve(HUMAN3R) == Path(HUMAN3R)
    assert "using the local 'human3r_896L', not the released checkpoint" in capsys.readouterr().err
    assert weights.resolve("model.pth", progress=False) == Path("model.pth")
    assert not cache.exists() and no_conversion == []


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HUMAN3R_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_root() == tmp_path / "xdg" / "human3r-jax"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # not absolute: ignored, as the XDG specification says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.cache_root() == tmp_path / "home" / ".cache" / "human3r-jax"
    monkeypatch.setenv("HUMAN3R_JAX_CACHE", str(tmp_path / "mine"))
    assert weights.cache_root() == tmp_path / "mine"


# ---- the hub


def test_hub_name_converts_once_and_reuses(cache, hf_cache, conversions, human3r_pth, monkeypatch):
    path, sha = human3r_pth
    with_sha(monkeypatch, HUMAN3R, sha)
    hf_cache.add(path, sha)
    out = weights.resolve(HUMAN3R, progress=False)
    assert out == cache / "checkpoints" / HUMAN3R
    cfg, _ = ckpt.read_config(out)
    assert isinstance(cfg, Human3rConfig) and cfg.dino == TINY_DINO
    record = json.loads((out / weights.RECORD).read_text())
    assert record["name"] == HUMAN3R and record["sha256"] == sha and record["revision"] == REVISION
    assert record["source"] == {"hub": "faneggg/human3r", "file": "human3r_896L.pth"}
    assert record["verified"] == weights.BY_REGISTRY and record["size"] == path.stat().st_size
    assert [p.name for p in conversions] == ["human3r_896L.pth"]
    before = (out.stat().st_ino, (out / "config.json").stat().st_mtime_ns)

    assert weights.resolve(HUMAN3R, progress=False) == out
    assert len(conversions) == 1
    assert (out.stat().st_ino, (out / "config.json").stat().st_mtime_ns) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [HUMAN3R]  # no temporary folder left


def test_hub_file_is_checked_against_its_blob_name(cache, hf_cache, copies, human3r_pth):
    path, _ = human3r_pth
    blob = hf_cache.add(path, "f" * 64)  # the hub's SHA-256 (its LFS ETag) names the blob: not this content's
    with one_line_error("does not match the hub's LFS SHA-256 f{64}; the file in the Hugging Face cache is damaged"):
        weights.resolve(HUMAN3R, progress=False)
    assert blob.is_file()  # the Hugging Face cache is not ours: reported, not deleted
    assert copies == [] and not (cache / "checkpoints").exists()


def test_interrupted_conversion_leaves_nothing_that_looks_complete(cache, hf_cache, copies, human3r_pth, monkeypatch):
    path, sha = human3r_pth
    hf_cache.add(path, sha)  # KNOWN records no SHA-256: the blob name is the check

    def interrupted(raw, out_dir, **_):
        (Path(out_dir) / "config.json").write_text("{")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(convert, "convert_and_save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            weights.resolve(HUMAN3R, progress=False)
    assert list((cache / "checkpoints").iterdir()) == []
    out = weights.resolve(HUMAN3R, progress=False)
    record = json.loads((out / weights.RECORD).read_text())
    assert record["sha256"] == sha and record["verified"] == weights.BY_HUB and len(copies) == 1


def _no_record(folder: Path):
    (folder / weights.RECORD).unlink()


def _record_of_another(folder: Path):
    record = json.loads((folder / weights.RECORD).read_text())
    (folder / weights.RECORD).write_text(json.dumps({**record, "written_by": "someone else"}))


def _other_sha(folder: Path):
    record = json.loads((folder / weights.RECORD).read_text())
    (folder / weights.RECORD).write_text(json.dumps({**record, "sha256": "e" * 64}))


def _no_params(folder: Path):
    shutil.rmtree(folder / "params")


@pytest.mark.parametrize("damage", [_no_record, _record_of_another, _other_sha, _no_params])
def test_a_cached_folder_not_to_trust_is_rebuilt(cache, hf_cache, copies, human3r_pth, monkeypatch, damage):
    path, sha = human3r_pth
    with_sha(monkeypatch, HUMAN3R, sha)
    hf_cache.add(path, sha)
    out = weights.resolve(HUMAN3R, progress=False)
    damage(out)
    assert weights.resolve(HUMAN3R, progress=False) == out
    assert len(copies) == 2
    assert json.loads((out / weights.RECORD).read_text())["sha256"] == sha
    assert (out / "params").is_dir() and sorted(p.name for p in out.parent.iterdir()) == [HUMAN3R]


def test_a_folder_with_foreign_files_is_never_replaced(cache, hf_cache, copies, human3r_pth):
    folder = cache / "checkpoints" / HUMAN3R
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    hf_cache.add(*human3r_pth)
    with one_line_error("notes.txt, which human3r-jax did not write"):
        weights.resolve(HUMAN3R, progress=False)
    assert (folder / "notes.txt").read_text() == "mine" and copies == []


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HUMAN3R_JAX_OFFLINE"])
def test_hub_offline_with_an_empty_cache(cache, hf_cache, no_conversion, server, monkeypatch, var):
    hits = len(server.hits)
    if var == "HUMAN3R_JAX_OFFLINE":  # huggingface_hub itself online: we must not let it try
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv(var, "1")
    with one_line_error(f"^human3r_896L: not in the local Hugging Face cache and {var} is set; ") as e:
        weights.resolve(HUMAN3R, progress=False)
    assert_one_line(e)
    assert not cache.exists() and no_conversion == [] and len(server.hits) == hits


def _response(status: int):
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/faneggg/human3r"))


@pytest.mark.parametrize(
    "error,message",
    [
        (errors.LocalEntryNotFoundError("no connection"), "cannot reach the Hugging Face hub"),
        (errors.RepositoryNotFoundError("404 Client Error\nmore", response=_response(404)), "not found or not acc"),
        (errors.RemoteEntryNotFoundError("404 Client Error", response=_response(404)), "has no file human3r_896L"),
        (errors.HfHubHTTPError("500 Server Error\nmore", response=_response(500)), "failed \\(500 Server Error\\)"),
        (OSError(errno.ENOSPC, "No space left on device"), "\\(No space left on device\\)"),
        (httpx.ReadTimeout("timed out"), "failed \\(ReadTimeout: timed out\\)"),
    ],
)
def test_hub_failures_are_one_line(cache, no_conversion, monkeypatch, error, message):
    def fail(*_, **__):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with one_line_error(f"^human3r_896L: .*{message}") as e:
        weights.resolve(HUMAN3R, progress=False)
    assert_one_line(e)
    assert no_conversion == []


# ---- plain URLs, against a local server


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good/F: the body; /truncated/F: half of it under the full Content-Length; /html/F: a web page."""

    def do_GET(self):
        self.server.hits.append(self.path)
        kind = self.path.split("/")[1]
        body, content_type, length = self.server.body, "application/octet-stream", len(self.server.body)
        if kind == "truncated":
            body = body[: len(body) // 2]
        elif kind == "html":
            body = b"<html>Google Drive can't scan this file for viruses</html>"
            content_type, length = "text/html; charset=utf-8", len(body)
        elif kind != "good":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # huggingface_hub asks for a file's metadata first
        self.server.hits.append(self.path)
        self.send_error(404)

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def server():
    """A local HTTP server on 127.0.0.1 (its `body` served by `_Handler`, `hits` the paths asked); it stops after
    the module, or by itself after 2 minutes at the latest."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.body, httpd.hits = bytes(range(256)) * 1024, []  # any body, for the downloads that must fail
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    deadline = threading.Timer(120, httpd.shutdown)
    deadline.daemon = True
    deadline.start()
    yield httpd
    deadline.cancel()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cut3r_server(server, cut3r_pth, monkeypatch):
    monkeypatch.setattr(server, "body", cut3r_pth[0].read_bytes())
    return server


def serve_as_cut3r(monkeypatch, server, kind: str, sha: str | None = None) -> str:
    url = f"http://127.0.0.1:{server.server_address[1]}/{kind}/{CUT3R}.pth"
    with_sha(monkeypatch, CUT3R, sha, weights.Url(url, f"{CUT3R}.pth"))
    return url


def test_url_download_is_recorded_checked_and_converted_once(cache, cut3r_server, conversions, cut3r_pth, monkeypatch):
    path, sha = cut3r_pth
    url = serve_as_cut3r(monkeypatch, cut3r_server, "good")
    hits = len(cut3r_server.hits)
    out = weights.resolve(CUT3R, progress=False)
    assert isinstance(ckpt.read_config(out)[0], Cut3rConfig)
    raw = cache / "downloads" / f"{CUT3R}.pth"
    assert weights.sha256_file(raw) == sha and raw.stat().st_size == path.stat().st_size
    assert (cache / "downloads" / f"{CUT3R}.pth.sha256").read_text() == f"{sha}  {CUT3R}.pth\n"
    assert sorted(p.name for p in raw.parent.iterdir()) == [f"{CUT3R}.pth", f"{CUT3R}.pth.sha256"]  # no .part
    record = json.loads((out / weights.RECORD).read_text())
    assert record["source"] == {"url": url, "file": f"{CUT3R}.pth"} and record["sha256"] == sha
    assert record["verified"] == weights.FIRST_USE
    assert weights.resolve(CUT3R, progress=False) == out
    assert len(conversions) == 1 and len(cut3r_server.hits) == hits + 1

    # a later use of the raw file is checked against the first download's record
    shutil.rmtree(out)
    with raw.open("ab") as f:
        f.write(b"\0")
    with one_line_error("does not match the SHA-256 recorded at its first download .*removed this damaged download"):
        weights.resolve(CUT3R, progress=False)
    assert not raw.exists() and not out.exists()
    out = weights.resolve(CUT3R, progress=False)  # downloaded afresh, checked against the record
    assert json.loads((out / weights.RECORD).read_text())["verified"] == weights.BY_RECORD
    assert len(conversions) == 2 and len(cut3r_server.hits) == hits + 2


@pytest.mark.parametrize(
    "kind,sha,message",
    [
        ("truncated", None, "the download of .* stopped after [0-9,]+ of [0-9,]+ bytes; run again"),
        ("html", None, "sent a web page \\(text/html\\), not the checkpoint"),
        ("good", "0" * 64, "has SHA-256 [0-9a-f]{64}, not the SHA-256 recorded in human3r_jax.weights.KNOWN 0{64}"),
        ("missing", None, "HTTP 404"),
    ],
)
def test_a_failed_download_leaves_no_file(cache, server, no_conversion, monkeypatch, kind, sha, message):
    serve_as_cut3r(monkeypatch, server, kind, sha)
    with one_line_error(f"^{CUT3R}: .*{message}") as e:
        weights.resolve(CUT3R, progress=False)
    assert_one_line(e)
    downloads = cache / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []
    assert no_conversion == []


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HUMAN3R_JAX_OFFLINE"])
def test_url_offline_with_an_empty_cache(cache, server, no_conversion, monkeypatch, var):
    serve_as_cut3r(monkeypatch, server, "good")
    monkeypatch.setenv(var, "1")
    hits = len(server.hits)
    with one_line_error(f"^{CUT3R}: not in the download cache .* and {var} is set; ") as e:
        weights.resolve(CUT3R, progress=False)
    assert_one_line(e)
    assert len(server.hits) == hits and no_conversion == []
