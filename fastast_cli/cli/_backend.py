"""Options shared by the commands that run a model on a choice of backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BackendOption = Annotated[str, typer.Option(
    help="Inference backend: torch (eager), compile (torch.compile, one compilation per r and "
    "batch shape) or onnxruntime (an ONNX export with the merging baked in: --onnx, else "
    "exported once into the cache folder, $FASTAST_CACHE_DIR or ~/.cache/fastast; needs "
    "the export extra).")]
OnnxOption = Annotated[Path | None, typer.Option(
    help="With --backend onnxruntime: an ONNX file from `fastast export` to run (its metadata "
    "must match the checkpoint's frames, labels, r and proportional attention).")]
