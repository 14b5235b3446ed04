"""A per-file `.npy` cache of per-clip arrays (fbank or decoded waveform), safe across workers.

An entry's key hashes the clip's absolute path, modification time and size plus the parameters
that shaped the array, so an edited clip or a different feature setting never reads a stale
entry. Entries are written atomically: DataLoader workers racing on the same clip at worst
compute it twice. The cache is an aid, never a reason to stop: an entry that cannot be written
(a full disk, a folder turned read-only) is computed and used unstored, and no more entries are
tried.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastast_cli.atomic import atomic_path
from fastast_cli.errors import FastASTError

CACHE_VERSION = 1


def clip_key(path: str | os.PathLike[str], kind: str, **params: object) -> str:
    """Hex key of one clip's array of `kind` made with `params` (sorted, so order-free)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    fields = [str(resolved), str(stat.st_mtime_ns), str(stat.st_size), kind, f"v{CACHE_VERSION}"]
    fields += [f"{name}={params[name]}" for name in sorted(params)]
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()


class ArrayCache:
    """Arrays stored one per file under `root/<kind>/<key[:2]>/<key>.npy`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.writable = True

    def entry(self, kind: str, key: str) -> Path:
        """Where the array with this key lives."""
        return self.root / kind / key[:2] / f"{key}.npy"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for `key`, or `compute()` stored and returned on a miss."""
        path = self.entry(kind, key)
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            pass  # missing, or unreadable (a damaged entry is simply recomputed)
        array = np.ascontiguousarray(compute())
        if self.writable:
            try:
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, array, allow_pickle=False)
            except (FastASTError, OSError):
                self.writable = False
        return array

    def count(self, kind: str) -> int:
        """Number of stored entries of `kind` (for reports and tests)."""
        folder = self.root / kind
        return sum(1 for _ in folder.glob("*/*.npy")) if folder.exists() else 0
