"""Finding a dataset on disk: the folder given, an archive to extract, or a download first."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from fastast_cli.data.archives import archive_stem, extract_archive, is_archive
from fastast_cli.data.download import download
from fastast_cli.data.prepare.common import Workspace
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
    archive_name: str | None = None,
    fetch: bool = False,
) -> Path:
    """The dataset root from `--src` (archive or folder), downloading first if `fetch`."""
    if fetch:
        if url is None or archive_name is None:
            raise FastASTError(f"{what} cannot be downloaded automatically")
        target = (
            src
            if src is not None and not src.is_dir()
            else workspace.out / "downloads" / archive_name
        )
        src = download(url, target, checksum)
    if src is None:
        raise FastASTError(f"pass --src with {what} (or --download to fetch it)")
    src = src.expanduser()
    if not src.exists():
        raise FastASTError(f"--src {src} does not exist; expected {what}")
    if src.is_dir():
        return find_root(src.resolve(), required, what)
    if not is_archive(src):
        raise FastASTError(f"--src {src}: expected {what} (a .zip/.tar.gz archive or a folder)")
    extracted = extract_archive(src, workspace.out / "raw" / archive_stem(src))
    workspace.report.unsafe.extend(extracted.unsafe)
    return find_root(extracted.root, required, what)
