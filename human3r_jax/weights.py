"""Released weights by name: `--checkpoint human3r_896L` fetches the official file, checks it, converts it once.

    path = resolve("human3r_896L")   # → ~/.cache/human3r-jax/checkpoints/human3r_896L (our orbax layout)
    path = resolve("ckpt/my_model")  # an existing file or folder is returned as it is

Where the files come from (`KNOWN`): Human3R's four releases from the Hugging Face hub (`faneggg/human3r`),
fetched with `huggingface_hub.hf_hub_download` into its own cache (HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE
honoured); CUT3R's two from Google Drive, fetched with urllib into our cache.

The cache (`cache_root()`: $HUMAN3R_JAX_CACHE, else $XDG_CACHE_HOME/human3r-jax, else ~/.cache/human3r-jax):

    downloads/<file>.pth          a URL download, renamed into place only once complete and checked
    downloads/<file>.pth.sha256   its SHA-256 as recorded at the first download (`sha256sum -c` reads it)
    checkpoints/<name>/           the converted checkpoint (config.json, params/) and release.json: name,
                                  source and the SHA-256 of the file it was converted from

A conversion is written into a temporary sibling folder and renamed when complete, so an interrupted one never
leaves a folder that looks complete; a folder whose release.json is missing or does not match the table is
converted again, and nothing but an earlier conversion (our file names only) is ever replaced.

What is checked, honestly: the true SHA-256 of the official files could not be looked up when this table was
written, so every entry records `sha256=None` until someone fills it in (one edit: the hex string in place of
None). Until then:
- hub files are checked against the hub's own SHA-256: for a file stored with Git LFS (as the releases are)
  the hub's ETag is the SHA-256 of the content and huggingface_hub names the cached blob by it (without
  symlinks in its cache, the ETag is asked from the hub). huggingface_hub itself checks only the size, so the
  file is hashed here and compared. This guards against a damaged download, not against the hub serving
  another file.
- URL files have nothing to be checked against the first time: their SHA-256 is recorded at the first
  download (trust on first use) and every later use of that file is checked against the record.
A file that fails its check is deleted only if it is in our download cache, never elsewhere (the Hugging Face
cache is the user's: the message says how to clear it). Whatever was checked is written into release.json.

Once converted, a name is served from checkpoints/<name>/ without any network access. A name never becomes part
of a path unless it is a key of `KNOWN`; an existing path always wins over a name (with a note on stderr).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from human3r_jax import outputs
from human3r_jax.errors import Human3rError

HUB_REPO = "faneggg/human3r"
GDRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


@dataclasses.dataclass(frozen=True)
class Hub:
    """A file of a Hugging Face hub model repository."""

    repo: str
    filename: str

    def record(self) -> dict:
        return {"hub": self.repo, "file": self.filename}


@dataclasses.dataclass(frozen=True)
class Url:
    """A file at a plain HTTP(S) URL."""

    url: str
    filename: str

    def record(self) -> dict:
        return {"url": self.url, "file": self.filename}


@dataclasses.dataclass(frozen=True)
class Release:
    source: Hub | Url
    sha256: str | None  # of the official file; None: not known here yet (see the module docstring)
    description: str


def _hub(filename: str) -> Hub:
    return Hub(HUB_REPO, filename)


def _drive(file_id: str, filename: str) -> Url:
    return Url(GDRIVE.format(file_id), filename)


# name → where the official file is, its SHA-256 (None: not known yet; a known one goes in place of None), what it
# is. The names are also the folder names in the cache.
KNOWN: dict[str, Release] = {
    "human3r_672S": Release(
        _hub("human3r_672S.pth"),
        sha256=None,
        description="Human3R, DINOv2 ViT-S/14 human prior, 672 px",
    ),
    "human3r_672B": Release(
        _hub("human3r_672B.pth"),
        sha256=None,
        description="Human3R, DINOv2 ViT-B/14 human prior, 672 px",
    ),
    "human3r_672L": Release(
        _hub("human3r_672L.pth"),
        sha256=None,
        description="Human3R, DINOv2 ViT-L/14 human prior, 672 px",
    ),
    "human3r_896L": Release(
        _hub("human3r_896L.pth"),
        sha256=None,
        description="Human3R, DINOv2 ViT-L/14 human prior, 896 px",
    ),
    "cut3r_512_dpt_4_64": Release(
        _drive("1Asz-ZB3FfpzZYwunhQvNPZEUA8XUNAYD", "cut3r_512_dpt_4_64.pth"),
        sha256=None,
        description="CUT3R, DPT head, 512 px (scenes, no people)",
    ),
    "cut3r_224_linear_4": Release(
        _drive("11dAgFkWHpaOHsR6iuitlB_v4NFFBrWjy", "cut3r_224_linear_4.pth"),
        sha256=None,
        description="CUT3R, linear head, 224 px square crop (scenes, no people)",
    ),
}

RECORD = "release.json"
RECORD_KIND = "released-weights"
CONVERTED_ENTRIES = {outputs.MARKER, "config.json", "params", RECORD}  # all a conversion writes
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a single path component: no separator, not `..`
SHA256 = re.compile(r"[0-9a-f]{64}")
TIMEOUT_S = 60  # urllib: for the connection and for each read
CHUNK = 1 << 20
MAX_DOWNLOAD = 16 << 30  # the released files are 1–4 GB; a server streaming without end is not one of them

# How a file's SHA-256 was checked (written into release.json)
BY_REGISTRY = "the SHA-256 recorded in human3r_jax.weights.KNOWN"
BY_HUB = "the hub's LFS SHA-256"
BY_RECORD = "the SHA-256 recorded at its first download"
FIRST_USE = "nothing yet: first download, its SHA-256 recorded (trust on first use)"


class WeightsError(Human3rError):
    """A checkpoint name or path that cannot be resolved, or a download that failed or did not check out."""


def cache_root() -> Path:
    """$HUMAN3R_JAX_CACHE, else $XDG_CACHE_HOME/human3r-jax (an absolute XDG_CACHE_HOME), else ~/.cache/human3r-jax."""
    explicit = os.environ.get("HUMAN3R_JAX_CACHE")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "human3r-jax"


def names() -> str:
    """The released names, for help texts and messages."""
    return ", ".join(KNOWN)


def resolve(name_or_path: str | Path, progress: bool = True) -> Path:
    """An existing file or folder → itself (it wins over a released name of the same spelling; noted on stderr);
    a released name → its converted checkpoint folder in the cache, downloaded, checked and converted first when
    not there yet. `progress`: download bars and one-line notes on stderr."""
    text = str(name_or_path)
    if text and Path(text).exists():
        if text in KNOWN and progress:
            _note(f"using the local {text!r}, not the released checkpoint of that name")
        return Path(text)
    release = KNOWN.get(text)
    if release is None:
        shown = text if text and text.isprintable() else repr(text)
        raise WeightsError(
            f"{shown}: no such checkpoint file or folder, and not a released name; known names: {names()}"
        )
    return _converted(text, release, progress)


def _note(message: str) -> None:
    print(f"human3r-jax: {message}", file=sys.stderr, flush=True)


def _component(value: str, what: str) -> str:
    """`value` as a single path component; the table is ours, but a bad edit must not reach outside the cache."""
    if not SAFE_NAME.fullmatch(value):
        raise WeightsError(f"{value!r}: not usable as a {what} in the cache (letters, digits, '_', '.', '-' only)")
    return value


def _converted(name: str, release: Release, progress: bool) -> Path:
    folder = cache_root() / "checkpoints" / _component(name, "checkpoint name")
    problem = _cached_problem(folder, name, release)
    if problem is None:
        return folder
    _check_replaceable(folder, name)  # before a download of gigabytes
    if folder.exists() and progress:
        _note(f"{folder}: {problem}; converting again")
    fetch = _fetch_hub if isinstance(release.source, Hub) else _fetch_url
    raw, record = fetch(name, release, progress)
    _convert(raw, folder, {"name": name, **record}, release, progress)
    return folder


def _cached_problem(folder: Path, name: str, release: Release) -> str | None:
    """Why `folder` is not a usable conversion of `release` (None: it is)."""
    from human3r_jax import checkpoint as ckpt

    if not folder.is_dir():
        return "absent"
    record = outputs.read_json(folder / RECORD)
    if record.get("written_by") != "human3r-jax" or record.get("kind") != RECORD_KIND:
        return f"no {RECORD} of human3r-jax"
    if record.get("name") != name or record.get("source") != release.source.record():
        return f"{RECORD} describes another file ({record.get('name')!r}, {record.get('source')!r})"
    sha = record.get("sha256")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha) or release.sha256 not in (None, sha):
        return f"{RECORD} records SHA-256 {sha!r}, not {release.sha256}"
    if not (folder / "params").is_dir():
        return "no params/ folder"
    try:
        ckpt.read_config(folder)
    except Human3rError as e:
        return str(e)
    return None


def _check_replaceable(folder: Path, name: str) -> None:
    """Refuse unless `folder` is absent or holds only what a conversion writes (an earlier, unusable one)."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise WeightsError(f"{folder}: not a folder of human3r-jax (the converted {name} goes there); move it away")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in CONVERTED_ENTRIES)
    if foreign:
        raise WeightsError(
            f"{folder}: holds {foreign[0]}, which human3r-jax did not write (the converted {name} goes there); "
            "move it away"
        )


def _convert(raw: Path, folder: Path, record: dict, release: Release, progress: bool) -> None:
    """Convert `raw` into a temporary sibling of `folder`, add the record, and rename it into place."""
    from human3r_jax.converters import convert

    tmp = outputs.make_temp_dir(folder.parent, f".{folder.name}.tmp-")
    try:
        if progress:
            _note(f"converting {raw.name} (once) into {folder}")
        convert.convert_and_save(raw, tmp)
        meta = {"written_by": "human3r-jax", "kind": RECORD_KIND, **record, "size": raw.stat().st_size}
        (tmp / RECORD).write_text(json.dumps(meta, indent=1) + "\n")
        # another process may have finished the same conversion meanwhile: keep the first
        if _cached_problem(folder, record["name"], release) is not None:
            _check_replaceable(folder, record["name"])
            outputs.replace_dir(tmp, folder)
    except OSError as e:
        raise WeightsError(f"{folder}: cannot write the converted checkpoint ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename


def _offline_var() -> str | None:
    """The environment variable that forbids downloads, if one is set."""
    for var in ("HUMAN3R_JAX_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checked_sha(path: Path, progress: bool) -> str:
    if progress:
        _note(f"checking the SHA-256 of {path}")
    try:
        return sha256_file(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None


# ---- Hugging Face hub


def _fetch_hub(name: str, release: Release, progress: bool) -> tuple[Path, dict]:
    """→ (the file in the Hugging Face cache, what release.json records); its SHA-256 checked."""
    from huggingface_hub import constants

    src = release.source
    offline = _offline_var() or ("HF_HUB_OFFLINE" if constants.is_offline_mode() else None)
    path = _hub_file(name, src, offline, progress)
    revision = path.parent.name  # snapshots/<commit>/<file>
    expected, how = release.sha256, BY_REGISTRY
    if expected is None:
        expected, how = _hub_sha256(name, path, src, revision, offline), BY_HUB
    actual = _checked_sha(path, progress)
    if actual != expected:
        raise WeightsError(
            f"{path}: SHA-256 {actual} does not match {how} {expected}; the file in the Hugging Face cache is damaged: "
            f"remove it (`hf cache delete`) and run again"
        )
    return path, {"source": src.record(), "revision": revision, "sha256": actual, "verified": how}


def _hub_file(name: str, src: Hub, offline: str | None, progress: bool) -> Path:
    """Offline: the file if the Hugging Face cache holds it (looked up there only: hf_hub_download would still ask
    the hub for its list of agents unless huggingface_hub itself is offline). Online: downloaded unless there."""
    import huggingface_hub as hf
    from huggingface_hub import constants

    if offline:
        cached = hf.try_to_load_from_cache(src.repo, src.filename)
        if isinstance(cached, str):
            return Path(cached)
        raise WeightsError(
            f"{name}: not in the local Hugging Face cache and {offline} is set; unset it to download "
            f"{src.repo}/{src.filename} into {constants.HF_HUB_CACHE}"
        )
    from tqdm import tqdm

    class QuietBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

    with _hub_errors(name, src):
        return Path(hf.hf_hub_download(src.repo, src.filename, tqdm_class=None if progress else QuietBar))


def _hub_sha256(name: str, path: Path, src: Hub, revision: str, offline: str | None) -> str:
    """The hub's SHA-256 of the file: the name of the blob its snapshot entry links to, or the hub's ETag."""
    import huggingface_hub as hf

    blob = Path(os.readlink(path)) if path.is_symlink() else None  # one level: the blob may link on to a store
    if blob is not None and blob.parent.name == "blobs" and SHA256.fullmatch(blob.name):
        return blob.name
    if offline:
        raise WeightsError(
            f"{path}: cannot check it offline (the Hugging Face cache holds a copy, not a link to a blob named by "
            f"its SHA-256) and {offline} is set; run once online"
        )
    with _hub_errors(name, src):
        etag = hf.get_hf_file_metadata(hf.hf_hub_url(src.repo, src.filename, revision=revision)).etag
    if not isinstance(etag, str) or not SHA256.fullmatch(etag):
        raise WeightsError(f"{name}: the hub gives no SHA-256 for {src.repo}/{src.filename} (ETag {etag!r})")
    return etag


@contextmanager
def _hub_errors(name: str, src: Hub) -> Iterator[None]:
    """huggingface_hub's exceptions → one WeightsError line each."""
    from huggingface_hub import constants, errors
    from huggingface_hub.utils import httpx

    where = f"{src.repo}/{src.filename}"
    cache = constants.HF_HUB_CACHE
    try:
        yield
    except errors.LocalEntryNotFoundError:  # online: the hub is out of reach
        raise WeightsError(
            f"{name}: cannot reach the Hugging Face hub to download {where}, and it is not in the local cache "
            f"{cache}; check the network connection"
        ) from None
    except errors.RepositoryNotFoundError as e:
        raise WeightsError(
            f"{name}: hub repository {src.repo} not found or not accessible ({_first_line(e)})"
        ) from None
    except errors.EntryNotFoundError:
        raise WeightsError(f"{name}: hub repository {src.repo} has no file {src.filename}") from None
    except errors.HfHubHTTPError as e:
        raise WeightsError(f"{name}: downloading {where} from the hub failed ({_first_line(e)})") from None
    except OSError as e:
        raise WeightsError(f"{name}: cannot download {where} into {cache} ({e.strerror or _first_line(e)})") from None
    except httpx.HTTPError as e:
        raise WeightsError(
            f"{name}: downloading {where} from the hub failed ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# ---- plain URLs


def _fetch_url(name: str, release: Release, progress: bool) -> tuple[Path, dict]:
    """→ (the file in our download cache, what release.json records); downloaded if absent, its SHA-256 checked
    against the table, else against the record of its first download, else recorded."""
    src = release.source
    downloads = cache_root() / "downloads"
    raw = downloads / _component(src.filename, "file name")
    sums = raw.with_name(raw.name + ".sha256")
    expected, how = release.sha256, BY_REGISTRY
    if expected is None:
        expected, how = _recorded_sha(sums, raw.name), BY_RECORD
    if raw.is_file():
        actual = _checked_sha(raw, progress)
        if expected is not None and actual != expected:
            raw.unlink()  # our own download
            raise WeightsError(
                f"{raw}: SHA-256 {actual} does not match {how} {expected}; removed this damaged download, "
                "run again to download it afresh"
            )
    else:
        offline = _offline_var()
        if offline:
            raise WeightsError(
                f"{name}: not in the download cache {downloads} and {offline} is set; unset it to download "
                f"{src.filename} from {src.url}"
            )
        actual = _download(name, src, raw, expected, how, progress)
    if expected is None:
        how = FIRST_USE
        _write_sums(sums, actual, raw.name)
    return raw, {"source": src.record(), "sha256": actual, "verified": how}


def _recorded_sha(sums: Path, filename: str) -> str | None:
    """The SHA-256 of `filename` in a `sha256sum` line; None when there is no such record."""
    try:
        fields = sums.read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) == 2 and SHA256.fullmatch(fields[0]) and fields[1].lstrip("*") == filename:
        return fields[0]
    return None


def _write_sums(sums: Path, sha: str, filename: str) -> None:
    from human3r_jax.export import atomic_write

    try:
        atomic_write(sums, lambda tmp: Path(tmp).write_text(f"{sha}  {filename}\n"))
    except OSError as e:
        raise WeightsError(f"{sums}: cannot record the SHA-256 ({e.strerror or e})") from None


def _download(name: str, src: Url, dest: Path, expected: str | None, how: str, progress: bool) -> str:
    """Stream `src` into a .part file beside `dest`, hashing as it goes; rename it to `dest` only once complete and
    matching `expected` (when given). On any failure nothing is left. → its SHA-256."""
    part = dest.with_name(f".{dest.name}.part")
    request = urllib.request.Request(src.url, headers={"User-Agent": "human3r-jax"})
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if response.headers.get_content_type() == "text/html":
                raise WeightsError(
                    f"{name}: {src.url} sent a web page (text/html), not the checkpoint: most likely Google Drive's "
                    f"download-quota or confirmation page; try later, or save {src.filename} from a browser as {dest}"
                )
            total = _declared_size(response, name, src)
            if total is not None:
                outputs.check_free_space(dest.parent, total)
            actual, received = _stream(response, part, total, src.filename, progress)
        if total is not None and received != total:
            raise WeightsError(
                f"{name}: the download of {src.url} stopped after {received:,} of {total:,} bytes; run again"
            )
        if expected is not None and actual != expected:
            raise WeightsError(f"{name}: the download of {src.url} has SHA-256 {actual}, not {how} {expected}")
        os.replace(part, dest)
    except urllib.error.HTTPError as e:
        raise WeightsError(f"{name}: downloading {src.url} failed (HTTP {e.code} {e.reason})") from None
    except urllib.error.URLError as e:
        raise WeightsError(f"{name}: cannot download {src.url} ({e.reason})") from None
    except http.client.HTTPException as e:
        raise WeightsError(f"{name}: the download of {src.url} broke off ({type(e).__name__}); run again") from None
    except OSError as e:  # a timeout, a dropped connection, a full disk
        raise WeightsError(f"{name}: downloading {src.url} into {dest.parent} failed ({e.strerror or e})") from None
    finally:
        part.unlink(missing_ok=True)
    return actual


def _declared_size(response, name: str, src: Url) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    if not length.strip().isdigit() or int(length) > MAX_DOWNLOAD:
        raise WeightsError(f"{name}: {src.url} declares {length!r} bytes, not a checkpoint of at most {MAX_DOWNLOAD:,}")
    return int(length)


def _stream(response, part: Path, total: int | None, label: str, progress: bool) -> tuple[str, int]:
    """Copy the body into `part` in chunks (at most MAX_DOWNLOAD bytes) → (SHA-256, bytes received)."""
    from tqdm import tqdm

    digest, received = hashlib.sha256(), 0
    with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
        while chunk := response.read(CHUNK):
            received += len(chunk)
            if received > MAX_DOWNLOAD:
                raise WeightsError(f"{label}: the download exceeds {MAX_DOWNLOAD:,} bytes, not a released checkpoint")
            digest.update(chunk)
            f.write(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), received
