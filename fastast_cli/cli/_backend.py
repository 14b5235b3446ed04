"""Options shared by the commands that run a model on a choice of backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.devices import DTYPES
from fastast_cli.errors import FastASTError

BackendOption = Annotated[str, typer.Option(
    help="Inference backend: auto (the fastest here for this model, shape and r, timed on a "
    "few batches once and cached in $FASTAST_CACHE, else the user cache folder; torch unless "
    "another beats it by more than the noise; the pick is printed), torch (eager), compile "
    "(torch.compile, one compilation per r and batch shape) or onnxruntime (an ONNX export "
    "with the merging baked in: --onnx, else exported once into the cache folder; needs the "
    "export extra).")]
OnnxOption = Annotated[Path | None, typer.Option(
    help="With --backend onnxruntime (or auto, which then runs it): an ONNX file from "
    "`fastast export` to run (its metadata must match the checkpoint's frames, labels, r and "
    "proportional attention).")]
DtypeOption = Annotated[str, typer.Option(
    help="Precision of the forward passes: fp32 (the default, as AST evaluates), or fp16 / "
    "bf16 mixed precision (autocast). Saved with the results.")]


def check_dtype(dtype: str, backends: list[str]) -> str:
    """`dtype` when it is a precision the backends can run (onnxruntime runs its export in
    fp32 only); a user error otherwise."""
    if dtype not in DTYPES:
        raise FastASTError(f"--dtype {dtype!r}: choose {', '.join(DTYPES)}")
    if dtype != "fp32" and "onnxruntime" in backends:
        raise FastASTError(f"--dtype {dtype}: the onnxruntime backend runs its fp32 export; "
                           "use --dtype fp32 or another backend")
    return dtype
