"""Download with checksum and resume, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from omgkit.errors import DatasetError, DownloadError
from omgkit.kws.fetch import download, safe_extract


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_checksum(server, tmp_path):
    root, url = server
    data = b"speech" * 10000
    (root / "a.bin").write_bytes(data)
    dest = download(
        f"{url}/a.bin",
        tmp_path / "dl" / "a.bin",
        hashlib.sha256(data).hexdigest(),
        show_progress=False,
    )
    assert dest.read_bytes() == data
    with pytest.raises(DownloadError, match="does not match"):
        download(f"{url}/a.bin", tmp_path / "dl" / "b.bin", "0" * 64, show_progress=False)
    assert (
        not (tmp_path / "dl" / "b.bin").exists() and not (tmp_path / "dl" / "b.bin.part").exists()
    )


def test_safe_extract_refuses_path_traversal(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"evil"))
    arc = tmp_path / "x.tar.gz"
    arc.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="unsafe archive"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
