"""Freed host memory is kept for reuse: no `mmap` per large block, no page faults per forward.

Each check runs in a fresh interpreter (the malloc settings are process-wide and last)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's")

MAPPED_BLOCKS = """
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_blocks():
    return libc.mallinfo2().hblks
"""


def run_python(code: str) -> str:
    """stdout of `code` run by a fresh interpreter (fails the test on a non-zero exit)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("keep", [False, True])
def test_a_large_block_comes_from_the_heap_once_freed_memory_is_kept(keep: bool) -> None:
    out = run_python(MAPPED_BLOCKS + f"""
from fastast_cli.host_memory import freed_memory_kept, keep_freed_memory
took = keep_freed_memory() if {keep} else None
before = mapped_blocks()
block = bytearray(8 << 20)
print(took, freed_memory_kept(), mapped_blocks() - before)
""")
    assert out == ("True True 0" if keep else "None False 1")


@pytest.mark.parametrize("opt_out", ["", "0"])
def test_the_fastast_command_keeps_freed_memory_unless_the_environment_opts_out(
        opt_out: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAST_KEEP_FREED_MEMORY", opt_out)
    out = run_python(MAPPED_BLOCKS + """
import sys
from fastast_cli.cli import main
sys.argv = ["fastast", "--version"]
try:
    main()
except SystemExit:
    pass
before = mapped_blocks()
block = bytearray(8 << 20)
print("mapped", mapped_blocks() - before)
""")
    assert out.splitlines()[-1] == ("mapped 1" if opt_out == "0" else "mapped 0")


FORWARD_FAULTS = """
import resource
import torch
from fastast_cli import build_model
from fastast_cli.host_memory import keep_freed_memory
if {keep}:
    keep_freed_memory()
torch.manual_seed(0)
model = build_model("tiny", 10, target_length=256, fstride=16, tstride=16).eval()
batch = torch.randn(8, 256, 128)
with torch.inference_mode():
    for _ in range(4):
        model(batch)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(9):
        model(batch)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


def test_a_cpu_forward_pass_stops_page_faulting_once_freed_memory_is_kept() -> None:
    """A tiny AST at batch 8 (130 tokens: a 3 MiB MLP hidden state per block): glibc's
    defaults map and fault its activations in again on every pass (thousands of faults of
    4 KiB), kept memory reuses the previous pass's pages.

    Faults of nine passes after four warm-up passes (glibc's own threshold rises over the first
    ones). How many depends on where the heap's
    blocks fall, which Python's string hashing and the address-space layout change from process
    to process: over three passes the defaults measured 1 300–58 000 and kept memory 0–780. The
    defaults fault again on every pass, kept memory at most once more (a new high-water mark),
    so nine passes separate them in every layout seen (defaults 17 000–133 000, kept 0–781)."""
    plain = int(run_python(FORWARD_FAULTS.format(keep=False)))
    kept = int(run_python(FORWARD_FAULTS.format(keep=True)))
    assert plain > 3000
    assert kept * 5 < plain
