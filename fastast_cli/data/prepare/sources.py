"""Finding a dataset on disk: the folder given, an archive to extract, or a download first."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from fastast_cli.data.archives import archive_stem, extract_archive, is_archive
from fastast_cli.data.download import download, parse_checksum, verify_file
from fastast_cli.data.prepare.workspace import Workspace
from fastast_cli.errors import FastASTError


def _folders(start: Path, depth: int) -> Iterator[Path]:
    """`start`, then its sub-folders, then theirs (breadth first, sorted), down to `depth`."""
    level = [start]
    for _ in range(depth + 1):
        yield from level
        level = [q for p in level for q in sorted(p.iterdir()) if q.is_dir()]


def find_root(start: Path, required: Sequence[str], what: str) -> Path:
    """The folder at or up to two levels below `start` that holds every `required` path."""
    for folder in _folders(start, 2):
        if all((folder / name).exists() for name in required):
            return folder
    raise FastASTError(
        f"{start}: not {what}: expected {', '.join(required)} in it (or in a folder below it)"
    )


def resolve_source(
    src: Path | None,
    workspace: Workspace,
    *,
    required: Sequence[str],
    what: str,
    url: str | None = None,
    checksum: str | None = None,
    official_checksum: str | None = None,
    archive_name: str | None = None,
    fetch: bool = False,
) -> Path:
    """The dataset root from `--src` (archive or folder), downloading first if `fetch`.

    `checksum` ('sha256:<hex>' or 'md5:<hex>') is checked on the download and on a local
    archive; a malformed value is refused before any work. 'none' checks nothing. Without it,
    a download is checked against `official_checksum` and a local archive is not checked (it
    may be a re-packed copy).
    """
    skip = checksum is not None and checksum.strip().lower() in ("", "none")
    given = None if skip or checksum is None else checksum
    if given is not None:
        parse_checksum(given)
    if fetch:
        if url is None or archive_name is None:
            raise FastASTError(f"{what} cannot be downloaded automatically")
        target = (
            src
            if src is not None and not src.is_dir()
            else workspace.out / "downloads" / archive_name
        )
        src = download(url, target, None if skip else given or official_checksum)
        given = None  # verified while downloading
    if src is None:
        raise FastASTError(f"pass --src with {what} (or --download to fetch it)")
    src = src.expanduser()
    if not src.exists():
        raise FastASTError(f"--src {src} does not exist; expected {what}")
    if src.is_dir():
        if given is not None:
            workspace.report.notes.append("--checksum applies to an archive; --src is a folder")
        return find_root(src.resolve(), required, what)
    if not is_archive(src):
        raise FastASTError(f"--src {src}: expected {what} (a .zip/.tar.gz archive or a folder)")
    if given is not None:
        verify_file(src, given)
    extracted = extract_archive(src, workspace.out / "raw" / archive_stem(src))
    workspace.report.unsafe.extend(extracted.unsafe)
    return find_root(extracted.root, required, what)
