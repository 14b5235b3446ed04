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
    "(torch.compile, one compilation per r and batch shape), onnxruntime (an ONNX export "
    "with the merging baked in: --onnx, else exported once into the cache folder; needs the "
    "export extra) or onnxruntime-int8 (the same with the linear layers in int8: faster on "
    "CPUs, scores within the parity `fastast export --quantize int8` reports; auto considers "
    "it only at >= 99 % top-1 agreement).")]
OnnxOption = Annotated[Path | None, typer.Option(
    help="With --backend onnxruntime or onnxruntime-int8 (or auto, which then runs the one "
    "the file's quantization calls for): an ONNX file from "
    "`fastast export` to run (its metadata must match the checkpoint's frames, labels, r and "
    "proportional attention).")]
DtypeOption = Annotated[str, typer.Option(
    help="Precision of the forward passes: fp32 (the default, as AST evaluates), or fp16 / "
    "bf16 mixed precision (autocast). Saved with the results.")]


def check_dtype(dtype: str, backends: list[str]) -> str:
    """`dtype` when it is a precision the backends can run (the onnxruntime backends run their
    fp32 or int8 export, fed fp32); a user error otherwise."""
    if dtype not in DTYPES:
        raise FastASTError(f"--dtype {dtype!r}: choose {', '.join(DTYPES)}")
    onnx = [name for name in backends if name.startswith("onnxruntime")]
    if dtype != "fp32" and onnx:
        inside = " (linear layers in int8)" if onnx[0].endswith("int8") else ""
        raise FastASTError(f"--dtype {dtype}: the {onnx[0]} backend runs its fp32 "
                           f"export{inside}; use --dtype fp32 or another backend")
    return dtype
