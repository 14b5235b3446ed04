"""Keep freed host memory in the process, so CPU forward passes stop page-faulting.

PyTorch's CPU allocator takes every tensor from `malloc` and hands it back on free. glibc
serves a block above its mmap threshold (128 KiB at start, raised to at most 32 MiB as blocks
are freed) with a fresh `mmap`, and returns freed memory at the top of its heap to the system
above its trim threshold. A transformer's activations are such blocks (a tiny AST at batch 8
allocates 3 MiB for one MLP hidden state), so every forward pass touches its activations for
the first time again: a page fault per 4 KiB page, which the kernel must zero. On the 2-core
AMD EPYC VM this project is built on, a tiny AST at batch 8 took ~12 000 faults per forward in
a fresh process and the base AST at the ESC-50 shape, batch 8, ~430 000;
`benchmarks/bench_allocator.py` measures what that costs on a machine.

`keep_freed_memory` tells glibc (`mallopt`) to serve every block from its heap and to keep
what is freed, so a forward pass reuses the pages of the previous one. The price: the
process's resident memory stays at its peak instead of shrinking between passes. Nothing
happens on other C libraries (macOS, musl) or where `malloc` is not glibc's (jemalloc or
tcmalloc preloaded; those cache freed memory themselves), nor when the environment sets
`FASTAST_KEEP_FREED_MEMORY=0` (for a machine where memory is tighter than time).
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes free at the heap's top before glibc returns them (int max)
OPT_OUT = "FASTAST_KEEP_FREED_MEMORY"  # "0": leave malloc as it is


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (no `mmap` per block, no trimming of
    the heap below 2 GiB free); True when it took effect, False where malloc is not glibc's or
    the environment opts out. Process-wide and idempotent; the `fastast` command calls it at
    start."""
    if os.environ.get(OPT_OUT, "").strip() == "0":
        return False
    if not glibc_version():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname (find_library would run ldconfig)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))


def glibc_version() -> str:
    """The C library's version when it is glibc ("glibc 2.36"), else ""."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # no confstr, or a name it does not know
        return ""
    return version if version.startswith("glibc") else ""


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory` has taken effect in this process (benchmarks print it:
    it changes CPU timings)."""
    return keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory()
