"""Downloads against a local HTTP server: streaming, resume with Range, checksums, errors."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from data_fixtures import http_server, make_esc50_tree, no_progress, url_of, zip_tree  # noqa: F401
from typer.testing import CliRunner

from fastast_cli.data.download import download
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError

PAYLOAD = bytes(range(256)) * 12_000  # ~3 MB: several chunks


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_streams_and_verifies(tmp_path: Path) -> None:
    with http_server({"/f.bin": PAYLOAD}) as server:
        dest = download(url_of(server, "/f.bin"), tmp_path / "f.bin", _sha(PAYLOAD))
        assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
        download(url_of(server, "/f.bin"), dest, _sha(PAYLOAD))  # already there: no request
        assert len(server.requests) == 1
        md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
        assert download(url_of(server, "/f.bin"), tmp_path / "g.bin", md5).read_bytes() == PAYLOAD


def test_interrupted_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1_000_000])
    with http_server({"/f.bin": PAYLOAD}) as server:
        dest = download(url_of(server, "/f.bin"), tmp_path / "f.bin", _sha(PAYLOAD))
        assert server.requests == [("/f.bin", "bytes=1000000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_cleanly(tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 1000)
    with http_server({"/f.bin": PAYLOAD}, honor_range=False) as server:
        dest = download(url_of(server, "/f.bin"), tmp_path / "f.bin", _sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_bytes(tmp_path: Path) -> None:
    with (
        http_server({"/f.bin": PAYLOAD}) as server,
        pytest.raises(FastASTError, match="checksum mismatch"),
    ):
        download(url_of(server, "/f.bin"), tmp_path / "f.bin", _sha(b"something else"))
    assert list(tmp_path.iterdir()) == []


def test_network_errors_are_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    with pytest.raises(FastASTError, match="--src"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip")
    with http_server({}) as server, pytest.raises(FastASTError, match="HTTP 404"):
        download(url_of(server, "/missing.zip"), tmp_path / "x.zip")
    with pytest.raises(FastASTError, match="sha256:<64 hex digits>"):
        download("http://127.0.0.1/x", tmp_path / "x", "crc32:1234")


def test_prepare_esc50_download(tmp_path: Path) -> None:
    from fastast_cli.cli import app

    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=5, per_fold=1)
    archive = zip_tree(tree, tmp_path / "src" / "ESC-50-master.zip").read_bytes()
    out = tmp_path / "out"
    with http_server({"/ESC-50-master.zip": archive}) as server:
        result = CliRunner().invoke(
            app,
            [
                "prepare",
                "esc50",
                "--download",
                "--url",
                url_of(server, "/ESC-50-master.zip"),
                "--checksum",
                _sha(archive),
                "--out",
                str(out),
                "--quiet",
            ],
        )
    assert result.exit_code == 0, result.output + result.stderr
    assert (out / "downloads" / "ESC-50-master.zip").read_bytes() == archive
    assert load_manifest(out).counts["fold2_eval"] == 2
