"""onnxruntime sessions as fastast opens them: every InferenceSession fastast creates is made here.

onnxruntime's thread pool lets its worker threads spin-wait after each `run` before they sleep
(tens of milliseconds of CPU: about 60 ms of a core after every run of the tiny demo AST on a
loaded 2-core AMD EPYC). Whatever runs next on the same cores (PyTorch's forward in an
interleaved benchmark or in `--backend auto`'s measurement, another process on a shared
machine) loses those cores to the spinning thread, and ORT itself runs slower when the cores
are shared. Sessions opened here have spinning switched off in both pools
(`session.intra_op.allow_spinning` and `session.inter_op.allow_spinning` = "0"): idle workers
sleep at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastast_cli.export.extras import import_extra

# Session config entries every fastast session carries (read back with
# `SessionOptions.get_session_config_entry`).
SESSION_CONFIG = {
    "session.intra_op.allow_spinning": "0",
    "session.inter_op.allow_spinning": "0",
}
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int | None = None) -> Any:
    """onnxruntime SessionOptions with `SESSION_CONFIG` set and `threads` intra-op threads
    (None: onnxruntime's default, one per core)."""
    ort = import_extra("onnxruntime", "running ONNX graphs")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    return options


def open_session(graph: str | Path | bytes, threads: int | None = None,
                 providers: Sequence[str] = (CPU_PROVIDER,)) -> Any:
    """An onnxruntime InferenceSession of `graph` (a file path or a serialized ModelProto) with
    `session_options(threads)` on `providers` (onnxruntime's errors propagate)."""
    ort = import_extra("onnxruntime", "running ONNX graphs")
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, session_options(threads), providers=list(providers))
