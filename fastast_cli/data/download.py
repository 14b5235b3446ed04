"""Streaming, resumable, checksum-verified downloads.

Bytes go to `<dest>.part`; an interrupted download resumes from there with an HTTP Range
request (a server that ignores Range makes it start over). The digest is computed while
streaming (including the bytes already in `.part`), checked against the expected
`"sha256:<hex>"` or `"md5:<hex>"`, and only a verified file is renamed to `dest`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

from fastast_cli.errors import FastASTError
from fastast_cli.progress import byte_progress

CHUNK = 1 << 20
USER_AGENT = "fastast-downloader/1"


DIGEST_LENGTHS = {"sha256": 64, "md5": 32}  # hex digits


def parse_checksum(checksum: str) -> tuple[str, str]:
    """`"sha256:abc…"` → ("sha256", "abc…"); only sha256 (64 hex digits) and md5 (32) are
    accepted."""
    algorithm, _, digest = checksum.partition(":")
    algorithm, digest = algorithm.lower().strip(), digest.strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{DIGEST_LENGTHS.get(algorithm, 0)}}}", digest) or not digest:
        raise FastASTError(
            f"checksum {checksum!r}: expected 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'"
        )
    return algorithm, digest


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_file(path: Path, checksum: str) -> None:
    """Check a local file against `"sha256:<hex>"`/`"md5:<hex>"`; FastASTError on a mismatch."""
    algorithm, expected = parse_checksum(checksum)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise FastASTError(
            f"{path}: checksum mismatch (expected {algorithm}:{expected}, got "
            f"{algorithm}:{actual}); not the archive --checksum describes, nothing was extracted"
        )


def _open(url: str, offset: int, timeout: float) -> HTTPResponse:
    """Open `url`, asking for bytes from `offset` on when resuming."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _fail(url: str, reason: object) -> FastASTError:
    """The one error a failed transfer raises."""
    return FastASTError(
        f"cannot download {url} ({reason}); download it yourself and pass its path with --src"
    )


def _connect(url: str, part: Path, timeout: float) -> tuple[HTTPResponse, int]:
    """The response and the byte offset it starts at (0 unless the server resumes `part`)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as error:
            if error.code != 416 or not offset:
                raise _fail(url, f"HTTP {error.code} {error.reason}") from None
            part.unlink()  # 416: `.part` is not a prefix the server can continue: start over
            offset, response = 0, _open(url, 0, timeout)
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as error:
        raise _fail(url, getattr(error, "reason", error)) from None  # ValueError: not a URL
    return response, offset if response.status == 206 else 0


def _hasher(algorithm: str, part: Path, resumed: bool) -> Any:
    """A hash object, already fed the bytes of `part` when resuming."""
    hasher = hashlib.new(algorithm)
    if resumed:
        with open(part, "rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
    return hasher


def _stream(
    response: HTTPResponse, part: Path, hasher: Any, offset: int, total: int | None
) -> None:
    """Append (or, from offset 0, write) the body to `part`, hashing and showing progress."""
    with (
        open(part, "ab" if offset else "wb") as out,
        byte_progress(f"download {part.name.removesuffix('.part')}", total, offset) as bar,
    ):
        while chunk := response.read(CHUNK):
            out.write(chunk)
            hasher.update(chunk)
            bar.advance(len(chunk))


def download(
    url: str, dest: str | os.PathLike[str], checksum: str | None = None, timeout: float = 60.0
) -> Path:
    """Fetch `url` to `dest` (skipped if `dest` exists and verifies); returns `dest`.

    Raises FastASTError on network errors (the `.part` file is kept for resuming) and on a
    checksum mismatch (the bad bytes are deleted).
    """
    dest = Path(dest)
    algorithm, expected = parse_checksum(checksum) if checksum else ("sha256", None)
    if dest.exists() and (expected is None or file_digest(dest, algorithm) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    response, offset = _connect(url, part, timeout)
    with response:
        hasher = _hasher(algorithm, part, resumed=offset > 0)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            _stream(response, part, hasher, offset, total)
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise _fail(url, f"interrupted: {error}; run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise _fail(url, f"got {part.stat().st_size} of {total} bytes; run again to resume")
    if expected is not None and hasher.hexdigest() != expected:
        part.unlink()
        raise FastASTError(
            f"{url}: checksum mismatch (expected {algorithm}:{expected}, got "
            f"{algorithm}:{hasher.hexdigest()}); the download was deleted. If the upstream file "
            "changed legitimately, pass --checksum with the new value."
        )
    os.replace(part, dest)
    return dest
