"""``defectnas download esci|wands``: fetch the public datasets for users who are online.

Why stdlib ``urllib`` and atomic files: the tool must work with no extra dependency, and a
download cut off half-way must never leave a file that looks complete (the loaders would
then fail far from the cause). Each file streams into a hidden temporary file in the target
directory, is checked against the server's Content-Length, and only then is renamed into
place with ``os.replace``. Files already present are kept (when the server reports a size,
only if it matches). Any network failure is one DataError line naming the URL.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..progress import progress

from ..errors import DataError
from ._common import one_line

CHUNK = 1 << 20  # bytes per read


@dataclass(frozen=True)
class RemoteDataset:
    """Where a public dataset lives."""

    base_url: str  # directory URL the files are under
    files: tuple[str, ...]  # file names, appended to base_url
    home: str  # project page, for the manual-download hint


DATASETS: dict[str, RemoteDataset] = {
    "esci": RemoteDataset(
        "https://github.com/amazon-science/esci-data/raw/main/shopping_queries_dataset/",
        ("shopping_queries_dataset_examples.parquet", "shopping_queries_dataset_products.parquet"),
        "https://github.com/amazon-science/esci-data",
    ),
    "wands": RemoteDataset(
        "https://github.com/wayfair/WANDS/raw/main/dataset/",
        ("query.csv", "product.csv", "label.csv"),
        "https://github.com/wayfair/WANDS",
    ),
}


def download(name: str, out_dir: str | os.PathLike, base_url: str | None = None, quiet: bool = False,
             timeout: float = 60.0) -> list[Path]:
    """Download dataset ``name`` ("esci" or "wands") into ``out_dir``; returns the files' paths.

    ``base_url`` replaces the dataset's URL (a mirror, or a local server in tests);
    ``timeout`` is in seconds per network operation. The returned directory can be passed to
    ``load_pairs`` / ``--data`` as it is.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    base = (base_url or dataset.base_url).rstrip("/") + "/"
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(one_line(f"{out}: cannot create the output directory ({exc.strerror or exc})")) from None
    paths = []
    for filename in dataset.files:
        url = base + filename
        target = out / filename
        try:
            if target.exists() and _already_there(url, target, timeout):
                if not quiet:
                    print(f"{target} already present, skipped", file=sys.stderr)
            else:
                _fetch(url, target, timeout, quiet)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            _close(exc)
            raise DataError(one_line(
                f"could not download {url} ({_reason(exc)}); download it manually from {dataset.home} "
                f"into {out} and pass --data {out}"
            )) from None
        paths.append(target)
    return paths


def _request(url: str, method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers={"User-Agent": "defectnas"})


def _already_there(url: str, target: Path, timeout: float) -> bool:
    """Whether ``target`` can be kept: its size matches the server's, or the server gives none."""
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        _close(exc)
        return True  # offline: keep what we have
    return length is None or int(length) == target.stat().st_size


def _fetch(url: str, target: Path, timeout: float, quiet: bool) -> None:
    """Stream ``url`` into a temporary file beside ``target``, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink, urllib.request.urlopen(_request(url), timeout=timeout) as response:
            header = response.headers.get("Content-Length")
            expected = int(header) if header is not None else None
            received = 0
            with progress(total=expected, quiet=quiet, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    sink.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            raise OSError(f"connection closed after {received} of {expected} bytes")
        if _is_lfs_pointer(tmp):
            raise OSError("the server sent a Git LFS pointer instead of the file")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a dataset is an ordinary file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed


def _is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(40).startswith(b"version https://git-lfs")


def _close(exc: BaseException) -> None:
    """An HTTPError holds the open response; close it rather than leave it to the collector."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
