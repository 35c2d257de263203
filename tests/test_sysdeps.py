"""tools/sysdeps.py: the private apt sources list for contrib/non-free."""

from __future__ import annotations

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("sysdeps", REPO / "tools/sysdeps.py")
sysdeps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sysdeps)


def test_deb822_sources_gain_contrib_and_nonfree(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (d / "other.sources").write_text(
        "Types: deb\nURIs: http://vendor.example/apt\nSuites: stable\nComponents: main\n"
    )
    out = sysdeps.nonfree_sources(tmp_path).splitlines()
    assert out == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib non-free",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm-updates main contrib non-free",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian-security bookworm-security main contrib non-free",
    ]


def test_one_line_sources_are_read(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
        "deb-src http://m.example/debian bookworm main\n"
    )
    assert (
        sysdeps.nonfree_sources(tmp_path)
        == "deb [signed-by=/k.gpg] http://m.example/debian bookworm main contrib non-free\n"
    )


def test_nothing_to_derive_gives_empty_list(tmp_path):
    assert sysdeps.nonfree_sources(tmp_path) == ""
