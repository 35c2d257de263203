"""`omg data fetch speech-commands`: download and check Speech Commands v0.02.

Needs internet (2.3 GB). Offline, use the synthetic corpus, or pass an
extracted copy to ``--data`` / ``omg data fetch --data-dir``.
"""

from __future__ import annotations

import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DatasetError, DownloadError, UnknownNameError
from ..util import progress, sha256_file
from .dataset import load_dataset

DATASETS = {
    "speech-commands": {
        "url": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        "sha256": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
        "archive": "speech_commands_v0.02.tar.gz",
    }
}


def download(
    url: str, dest: Path, sha256: str, *, timeout: float = 30.0, show_progress: bool = True
) -> Path:
    """Download to ``dest`` (resuming a partial ``.part``), verify SHA-256, rename."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if start and r.status != 206:
                start = 0  # server ignored the range: start over
            total = int(r.headers.get("Content-Length", 0)) + start
            with (
                open(part, "ab" if start else "wb") as f,
                progress(
                    total=total or None, desc=dest.name, unit="B", disable=not show_progress
                ) as bar,
            ):
                bar.update(start)
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"cannot download {url}: {e}. Offline? Use `omg data synth` for the synthetic corpus, "
            "or pass an extracted copy with --data-dir."
        ) from None
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 {got} does not match the expected {sha256}")
    os.replace(part, dest)
    return dest


def safe_extract(archive: Path, out: Path) -> None:
    """Extract a tar.gz refusing absolute paths, '..' and links (tarfile 'data' filter)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as t:
            t.extractall(out, filter="data")
    except tarfile.TarError as e:
        raise DatasetError(f"{archive}: corrupt or unsafe archive ({e})") from None


def fetch(
    name: str,
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Path:
    """Make ``name`` available at ``out``; with ``data_dir``, check and use a local copy."""
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list(DATASETS))
    if data_dir is not None:
        ds = load_dataset(data_dir)
        if "human" not in ds.engines:
            raise DatasetError(f"{data_dir} looks like a synthetic corpus, not Speech Commands")
        return Path(data_dir)
    spec = DATASETS[name]
    out = Path(out)
    if (out / "yes").is_dir() and (out / "testing_list.txt").is_file():
        return out
    archive = download(
        spec["url"], out / spec["archive"], spec["sha256"], show_progress=show_progress
    )
    safe_extract(archive, out)
    archive.unlink()
    load_dataset(out)
    return out
