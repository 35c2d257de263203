"""A run directory, ``artifacts/<run>/``, and its ``manifest.json``.

Every step (train, convert, evaluate) adds its section — settings, metrics
and the SHA-256 of the files it wrote — in one atomic update after its last
file, so a result can be traced to the exact data and model that made it,
and a step whose section is there has finished (``Manifest.done``).
:class:`Manifest` reads the sections through typed accessors.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omg_ta.frontend import FrontendSettings

from ..errors import ArtifactError, ConfigError
from ..util import atomic_write_text, sha256_file

MANIFEST = "manifest.json"


class Manifest:
    """A run's manifest, read-only, with typed accessors for what later steps need."""

    def __init__(self, data: Mapping[str, Any], path: Path):
        self.data, self.path = dict(data), path

    def _section(self, name: str, made_by: str = "omg train") -> dict[str, Any]:
        sec = self.data.get(name)
        if not isinstance(sec, dict):
            raise ArtifactError(f"{self.path} has no {name!r} section: run `{made_by}` first")
        return sec

    def done(self, step: str) -> bool:
        """Whether ``step`` (train, convert, evaluate) finished: its section and its files are there."""
        if not isinstance(self.data.get(step), dict):
            return False
        files = self.data[step].get("files", [])
        return all((self.path.parent / f).is_file() for f in files)

    @property
    def train_settings_dict(self) -> dict[str, Any]:
        """The training settings as recorded (``TrainSettings.from_dict`` makes them whole)."""
        return dict(self._section("train")["settings"])

    @property
    def model(self) -> str:
        """The model architecture's name (``omgkit.kws.models.MODELS``)."""
        return str(self.train_settings_dict["model"])

    @property
    def seed(self) -> int:
        return int(self.train_settings_dict.get("seed", 0))

    @property
    def frontend(self) -> FrontendSettings:
        """The frontend settings the model was trained with (and must run with)."""
        fe = self.train_settings_dict.get("frontend")
        if not isinstance(fe, Mapping):
            raise ArtifactError(f"{self.path} records no frontend settings: train the run again")
        try:
            return FrontendSettings.from_dict(dict(fe))
        except (ConfigError, TypeError) as e:
            raise ArtifactError(
                f"{self.path}: its frontend settings are not usable ({e})"
            ) from None

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in the order of the model's outputs."""
        labels = self._section("labels").get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ArtifactError(f"{self.path}: its labels are not a list of names")
        return tuple(labels)

    @property
    def data_path(self) -> Path:
        """The corpus the run was trained on."""
        return Path(self._section("data")["path"])

    @property
    def holdout_engine(self) -> str | None:
        """The engine kept out of training (None: none was)."""
        return self._section("data").get("holdout_engine")

    @property
    def data_fingerprint(self) -> str:
        return str(self._section("data")["fingerprint"])

    def section(self, name: str) -> dict[str, Any]:
        """A whole section, as recorded (for reports)."""
        return dict(self.data.get(name) or {})


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> Manifest:
        if not self.manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not a run directory (no {MANIFEST}); "
                f"make one with `omg train --out {self.path}`"
            )
        try:
            data = json.loads(self.manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{self.manifest_path} is not valid JSON ({e})") from None
        return Manifest(data, self.manifest_path)

    def require(self, name: str, made_by: str) -> Path:
        p = self.path / name
        if not p.is_file():
            raise ArtifactError(f"{p} is missing; run `{made_by}` first")
        return p

    def update(self, sections: Mapping[str, Mapping[str, Any]], files: list[str] = ()) -> Manifest:
        """Merge each of ``sections`` into the manifest and record hashes of ``files``, atomically.

        Call it once a step's last file is written: the step counts as done
        (``Manifest.done``) from then on. The files are listed in the first
        section as ``files``.
        """
        m = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
        for i, (name, data) in enumerate(sections.items()):
            sec = m.setdefault(name, {})
            sec.update(data)
            if i == 0 and files:
                sec["files"] = sorted(set(sec.get("files", [])) | set(files))
        hashes = m.setdefault("files", {})
        for f in files:
            hashes[f] = sha256_file(self.path / f)
        m["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2, sort_keys=True) + "\n")
        return Manifest(m, self.manifest_path)
