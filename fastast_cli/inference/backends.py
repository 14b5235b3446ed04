"""Inference backends behind one interface: given a model and settings, a callable fbank → logits.

- `auto`: the fastest of the others for this machine, model, shape and merging, measured once
  and cached (inference.backend_choice);
- `torch`: the model itself, eager;
- `compile`: the model through `torch.compile` (token counts are static for a given r, so one
  compilation per r schedule and batch shape);
- `onnxruntime`: an ONNX graph with the merging baked in, either a given file (its metadata must
  match the model's settings) or exported on the fly into a cache keyed by the weights and
  settings (under the user's cache folder unless another is given);
- `onnxruntime-int8`: the same with the graph's linear layers quantized to int8
  (export.quantize; an int8 file given, or an int8 export cached beside the fp32 ones).

A forward made here keeps the model's merging record (`model.merging`) of the moment it was
made, whatever is set on the model afterwards, as an ONNX graph does: forwards at several r can
share one model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastast_cli import __version__
from fastast_cli.errors import FastASTError
from fastast_cli.export.extras import import_extra
from fastast_cli.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    read_metadata,
    weights_digest,
)
from fastast_cli.export.onnx_session import open_session
from fastast_cli.export.quantize import QuantParity
from fastast_cli.inference.clips import input_spec
from fastast_cli.inference.scores import label_names, num_classes_of
from fastast_cli.models.reduction import DEFAULT_METHOD
from fastast_cli.models.reduction.settings import merging_as, merging_of

PathLike = str | os.PathLike[str]
Forward = Callable[[torch.Tensor], torch.Tensor]
BACKENDS = ("auto", "torch", "compile", "onnxruntime", "onnxruntime-int8")
ONNX_BACKENDS = {"onnxruntime": "none", "onnxruntime-int8": "int8"}  # → the graph's quantization
CACHE_ENVS = ("FASTAST_CACHE", "FASTAST_CACHE_DIR")  # the first one set wins


def check_backend(name: str) -> str:
    """`name` when it is a known backend, else a FastASTError listing them."""
    if name not in BACKENDS:
        raise FastASTError(f"unknown backend {name!r}: choose {', '.join(BACKENDS)}")
    return name


def make_forward(
    model: nn.Module,
    backend: str = "torch",
    *,
    onnx_file: PathLike | None = None,
    cache_dir: PathLike | None = None,
    method: str | None = None,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
) -> Forward:
    """fbank [B, T, F] → logits [B, C] of `model` (eval mode) at its current merging settings.
    The forward's `.backend` names the backend that runs it (for `auto`, the one picked; its
    `.choice` then holds the measurement).

    onnx_file: for `onnxruntime` or `onnxruntime-int8` (and `auto`, which then runs the one
    the file's quantization calls for), an exported graph to run instead of exporting one.
    cache_dir: for the onnxruntime backends, where on-the-fly exports are kept (default
    `user_cache_dir()`).
    method: the token reduction method the model is set up with (recorded in ONNX metadata;
    default: the model's own, tome for models without one).
    batch_size, dtype: for `auto`, the batches it will run (the measurement's shape and
    autocast; default dtype: fp16 on CUDA, fp32 elsewhere).
    """
    merging = merging_of(model)  # the record this forward keeps (None: a model that never merges)
    method = method or (merging.method if merging is not None else DEFAULT_METHOD)
    check_backend(backend)
    given_to_auto = backend == "auto" and onnx_file is not None
    if given_to_auto:  # a graph given: the onnxruntime backend of its quantization runs it
        if dtype not in (None, torch.float32):
            raise FastASTError(f"--onnx {onnx_file} runs in fp32 (onnxruntime): use --dtype "
                               "fp32, or leave --onnx out")
        backend = onnx_backend_of(Path(onnx_file))
    if onnx_file is not None and backend not in ONNX_BACKENDS:
        raise FastASTError(f"an ONNX file is run by the onnxruntime backend: add --backend "
                           f"{onnx_backend_of(Path(onnx_file))}")
    model.eval()
    if given_to_auto:  # the file's quantization decided: say which backend runs it
        from fastast_cli.inference.backend_choice import BackendChoice

        forward = make_forward(model, backend, onnx_file=onnx_file, method=method)
        choice = BackendChoice(backend, reason="runs the given ONNX file")
        forward.choice = choice  # type: ignore[attr-defined]
        return forward
    if backend == "auto":
        from fastast_cli.inference.backend_choice import auto_forward

        return auto_forward(
            model, lambda name: make_forward(model, name, cache_dir=cache_dir, method=method),
            batch_size=batch_size, dtype=dtype, method=method)
    if backend in ONNX_BACKENDS:
        if model.input_spec().native_length:
            raise FastASTError(
                f"the {backend} backend runs graphs of one input length; an ElasticAST reads "
                "clips of any length: use --backend torch or compile (export one length with "
                "`fastast export --frames N`)")
        quantization = ONNX_BACKENDS[backend]
        path = (Path(onnx_file) if onnx_file is not None
                else cached_export(model, cache_dir, method, quantization))
        return _named(onnx_forward(path, model, quantization), backend)
    runner: Callable[[torch.Tensor], torch.Tensor] = model
    if backend == "compile":
        _allow_recompiles()
        runner = torch.compile(model, dynamic=False)

    def forward(fbank: torch.Tensor) -> torch.Tensor:
        # no autograd: logits like the onnxruntime backends' (plain tensors, `.numpy()` works),
        # whichever backend `auto` picks on this machine
        with torch.no_grad(), merging_as(model, merging) if merging else contextlib.nullcontext():
            return runner(fbank)

    return _named(forward, backend)


def _named(forward: Forward, backend: str) -> Forward:
    """`forward`, saying which backend runs it."""
    forward.backend = backend  # type: ignore[attr-defined]
    return forward


def _allow_recompiles(per_function: int = 64) -> None:
    """Room for one compiled graph per r and batch shape: past dynamo's default of 8 graphs a
    function silently falls back to eager, which would mislabel a sweep's compiled timings."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, per_function)


def onnx_backend_of(path: Path) -> str:
    """The onnxruntime backend that runs the graph at `path`: by its recorded quantization."""
    if not path.is_file():
        raise FastASTError(f"no such ONNX file: {path}")
    quantization = read_metadata(path).get("quantization", "none")
    return next((name for name, kind in ONNX_BACKENDS.items() if kind == quantization),
                "onnxruntime")


def onnx_forward(path: Path, model: nn.Module, quantization: str = "none") -> Forward:
    """Run the ONNX graph at `path` with onnxruntime; its metadata must match `model`'s input
    shape and merging, and `quantization` (a file exported for other settings is refused, not
    silently used). An int8 forward's `.parity` is the parity recorded at export."""
    ort = import_extra("onnxruntime", "the onnxruntime backend")
    if not path.is_file():
        raise FastASTError(f"no such ONNX file: {path}")
    metadata = read_metadata(path)
    _check_matches(metadata, model, path)
    recorded = metadata.get("quantization", "none")
    if recorded != quantization:
        raise FastASTError(f"{path} is a graph with quantization {recorded!r}, not "
                           f"{quantization!r}: run it with --backend {onnx_backend_of(path)}")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    try:  # the same threads as PyTorch
        session = open_session(path, torch.get_num_threads(), providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise FastASTError(f"onnxruntime cannot load {path} ({error})") from None

    def forward(fbank: torch.Tensor) -> torch.Tensor:
        array = fbank.detach().float().cpu().numpy()
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]
        return torch.from_numpy(logits).to(fbank.device)

    forward.parity = QuantParity.from_metadata(metadata)  # type: ignore[attr-defined]
    return forward


def _check_matches(metadata: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Refuse a graph exported for another input shape, merging or label set than `model`'s
    (proportional attention only counts where tokens are merged), or from other weights (its
    `weights_sha256`; graphs exported before it was recorded are taken on their other
    metadata)."""
    spec = input_spec(model)
    r_schedule = list(getattr(model, "r_schedule", []))
    expected: dict[str, Any] = {"frames": spec.target_length, "num_mel_bins": spec.num_mel_bins,
                                "r_schedule": r_schedule}
    if any(r_schedule):
        expected["proportional_attention"] = bool(getattr(model, "proportional_attention", False))
    wrong = [f"{key} {metadata.get(key)!r} (expected {value!r})"
             for key, value in expected.items() if metadata.get(key) != value]
    labels = label_names(model, num_classes_of(model))
    if metadata.get("labels") != labels:
        wrong.append(f"its labels are not the checkpoint's {len(labels)} classes")
    if wrong:
        raise FastASTError(f"{path} was exported for other settings: {'; '.join(wrong)}")
    recorded = metadata.get("weights_sha256")
    if recorded is not None and recorded != weights_digest(model):
        raise FastASTError(
            f"{path} was exported from other weights than this checkpoint (weights_sha256 "
            f"{str(recorded)[:12]}…, the checkpoint's {weights_digest(model)[:12]}…): its scores "
            "would be another model's; export this checkpoint (fastast export CHECKPOINT "
            "--format onnx) or drop --onnx"
        )


def user_cache_dir() -> Path:
    """$FASTAST_CACHE (or $FASTAST_CACHE_DIR), else $XDG_CACHE_HOME/fastast, else
    ~/.cache/fastast."""
    for name in CACHE_ENVS:
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastast"


def cache_key(model: nn.Module, method: str, quantization: str = "none") -> str:
    """A digest of the weights, architecture, input statistics, merging settings, method,
    quantization and software versions: everything the exported graph and its metadata depend
    on."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    meta = getattr(model, "meta", {}) or {}
    settings = {
        "config": config.to_dict() if config is not None else type(model).__name__,
        "stats": [meta.get("mean"), meta.get("std")],
        "merging": _graph_merging(model),  # the method is recorded by name and options
        "method": method, "method_options": getattr(model, "reduction_options", {}),
        "versions": [__version__, torch.__version__],
    }
    if quantization != "none":  # fp32 keys stay those of earlier versions
        settings["quantization"] = quantization
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(weights_digest(model).encode())
    return digest.hexdigest()[:20]


def _graph_merging(model: nn.Module) -> dict[str, Any]:
    """How a model merges, for the key: its record and the r per block it resolves to ({} for
    a model that never merges)."""
    merging = merging_of(model)
    return {} if merging is None else {**merging.to_meta(), "r_schedule": model.r_schedule}


def cached_export(model: nn.Module, cache_dir: PathLike | None, method: str,
                  quantization: str = "none") -> Path:
    """The ONNX export of `model` at its settings and quantization, from the cache or made now
    (and cached)."""
    folder = Path(cache_dir) if cache_dir is not None else user_cache_dir() / "onnx"
    path = folder / f"{cache_key(model, method, quantization)}.onnx"
    if not path.is_file():
        export_onnx(model, path, method=method, quantize=quantization)
    return path
