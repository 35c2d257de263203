"""A run directory, ``artifacts/<run>/``, and its ``manifest.json``.

Every step (train, convert, evaluate) adds its settings, metrics and the
SHA-256 of the files it wrote, so a result can be traced to the exact data
and model that made it. Updates are atomic.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .util import atomic_write_text, sha256_file

MANIFEST = "manifest.json"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not a run directory (no {MANIFEST}); "
                f"make one with `omg train --out {self.path}`"
            )
        return json.loads(self.manifest_path.read_text())

    def require(self, name: str, made_by: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise ArtifactError(f"{p} is missing; run `{made_by}` first")
        return p

    def update(self, section: str, data: dict[str, Any], files: list[str] = ()) -> dict[str, Any]:
        """Merge ``data`` into ``section`` and record hashes of ``files``."""
        m = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
        m.setdefault(section, {}).update(data)
        hashes = m.setdefault("files", {})
        for f in files:
            hashes[f] = sha256_file(self.path / f)
        m["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2, sort_keys=True) + "\n")
        return m
