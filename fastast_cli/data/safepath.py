"""Names that come from untrusted files, kept inside the folder they belong to.

Archive members, CSV columns (ESC-50's `filename`), list files (Speech Commands'
`validation_list.txt`), files found by walking a dataset folder: every such name is resolved
under its root here, and a name that would lead outside it is refused. Refused: empty names,
absolute paths, Windows drive letters, `..` components, and names whose path leaves the root
through a symbolic link (the link and the root are both resolved before comparing).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath


def real_path(path: str | os.PathLike[str]) -> Path:
    """`path` absolute with links followed, like `Path.resolve()`, but a loop of links (or a
    name that is not UTF-8) is kept as it is instead of raising."""
    return Path(os.path.realpath(path))


def resolve_under(root: Path, name: str) -> Path | None:
    """The resolved path of `name` (relative, `/` or `\\` separated) under `root`, or None if
    it escapes `root` or names `root` itself."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    base = real_path(root)
    target = real_path(base.joinpath(*parts))
    return target if target.is_relative_to(base) and target != base else None


def stays_under(root: Path, path: Path) -> bool:
    """Whether `path` (found by walking `root`) still lies inside `root` once links are
    followed."""
    return real_path(path).is_relative_to(real_path(root))
