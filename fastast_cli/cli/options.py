"""What a flag string means: the parsers of the list and range flags (`--r 0:40:10`,
`--folds 1-5`, `--lengths 1,2,full`, `--resolutions 1,4`, `--backend torch,onnxruntime`,
`--checkpoint name=path`, `--ratios 0.8,0.1,0.1`) and the options shared by the commands that
run a model on a choice of backend. Every parser raises a one-line FastASTError naming the
flag; no module outside `fastast_cli/cli/` parses flag strings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.data.elastic_features import RESOLUTION_RANGE
from fastast_cli.devices import DTYPES
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.sweep import SweepRun
from fastast_cli.inference.backends import BACKENDS, check_backend
from fastast_cli.values import bounded_list, bounded_range, number, shown

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


MAX_FOLDS = 1000
MAX_LENGTHS = 100  # lengths or resolutions one --lengths / --resolutions may list
MAX_LENGTH_S = 24 * 3600.0
MAX_R_VALUES = 1000  # r values one --r may give (tokens per block: a few hundred at most)


def parse_folds(spec: str) -> list[int]:
    """`1-5` or `1,3,5` → fold numbers."""
    try:
        if "-" in spec:
            first, last = (int(v) for v in spec.split("-"))
            folds = bounded_range(first, last, 1, f"--folds {shown(spec)}", MAX_FOLDS)
        else:
            folds = [int(v) for v in spec.split(",") if v.strip()]
            bounded_list(folds, f"--folds {shown(spec)}", MAX_FOLDS)
    except ValueError:
        raise FastASTError(f"--folds {shown(spec)} is not understood: use 1-5 or 1,2,3") from None
    if not folds:
        raise FastASTError(f"--folds {shown(spec)} names no fold")
    if min(folds) < 1:
        raise FastASTError(f"--folds {shown(spec)}: fold numbers start at 1")
    return folds


def parse_lengths(spec: str) -> list[float | None]:
    """`1,2,5,10` seconds; `full` keeps whole clips."""
    try:
        values = [None if v.strip() == "full" else float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise FastASTError(f"--lengths {shown(spec)}: give seconds such as 1,2,5,10 (or full)"
                           ) from None
    bounded_list(values, f"--lengths {shown(spec)}", MAX_LENGTHS)
    if not values:
        raise FastASTError(f"--lengths {shown(spec)} names no length")
    for value in values:
        if value is not None:
            number(value, "--lengths: a length in seconds", above=0.0, high=MAX_LENGTH_S)
    return values


def parse_resolutions(spec: str) -> list[float]:
    """`1,2,4` → time resolutions q (frame shift 10 ms × q)."""
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise FastASTError(f"--resolutions {shown(spec)}: give factors such as 1,2,4") from None
    bounded_list(values, f"--resolutions {shown(spec)}", MAX_LENGTHS)
    if not values:
        raise FastASTError(f"--resolutions {shown(spec)}: factors must be > 0")
    low, high = RESOLUTION_RANGE
    for value in values:
        number(value, "--resolutions: a factor q (frame shift 10 ms × q)", low=low, high=high)
    return values


def parse_resolution_range(spec: str | None) -> list[float] | None:
    """`1,4` → [1.0, 4.0] (training draws q from that range); None keeps the recipe's value."""
    if spec is None:
        return None
    values = parse_resolutions(spec)
    if len(values) != 2:
        raise FastASTError(f"--resolutions {spec!r}: give LOW,HIGH, e.g. 1,4")
    return values


def parse_r_values(spec: str) -> list[int]:
    """`start:stop:step` (stop included), `start:stop` (step 1), or a comma list `0,8,16`."""
    try:
        if ":" in spec:
            parts = [int(p) for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = (*parts, 1) if len(parts) == 2 else parts
            if step <= 0:
                raise ValueError
            values = bounded_range(start, stop, step, f"--r {shown(spec)}", MAX_R_VALUES)
        else:
            values = [int(p) for p in spec.split(",") if p.strip()]
            bounded_list(values, f"--r {shown(spec)}", MAX_R_VALUES)
    except ValueError:
        raise FastASTError(
            f"--r {shown(spec)} is not understood: use start:stop:step (e.g. 0:40:5) or a list "
            "(0,8,16)"
        ) from None
    if not values or min(values) < 0:
        raise FastASTError(f"--r {shown(spec)} must give at least one value, all >= 0")
    return values


def parse_run(spec: str) -> SweepRun:
    """`name=path` or a bare path (named after its folder; an existing file's path may hold
    `=`)."""
    name, sep, path = spec.partition("=")
    if not sep or Path(spec).is_file():
        path = spec
        parts = [p for p in re.split(r"[\\/]", spec) if p]
        name = parts[-2] if len(parts) >= 2 else parts[-1] if parts else spec
    if not name or not path:
        raise FastASTError(f"--checkpoint {spec!r}: use name=path or a path")
    return SweepRun(name, path)


def parse_backends(spec: str) -> list[str]:
    """`torch,compile,onnxruntime` → the backends, each checked, duplicates dropped."""
    names = [check_backend(part.strip()) for part in spec.split(",") if part.strip()]
    if not names:
        raise FastASTError(f"--backend {spec!r} names no backend: use {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def parse_ratio_list(text: str) -> tuple[float, ...]:
    """`--ratios 0.8,0.1,0.1` → (0.8, 0.1, 0.1) (`prepare folder` checks and normalizes them)."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise FastASTError(f"--ratios {text!r}: expected three numbers like 0.8,0.1,0.1") from None
