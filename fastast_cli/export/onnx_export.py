"""ONNX export of a classifier with its token merging baked in, checked against PyTorch.

The graph takes normalized fbank [batch, frames, mel bins] (`fbank`, batch axis dynamic) and
returns logits [batch, classes] (`logits`). Merging at the model's current r schedule is part of
the graph: bipartite soft matching orders its edges with a stable sort, exported as ONNX TopK,
whose ties keep the lower index first, so ONNX and eager PyTorch merge the same tokens.

Everything needed to feed the graph travels in its metadata (`metadata_props`, JSON values):
labels, mean and std of the input normalization, sample rate, frames, mel bins, r (per block),
schedule, reduction method, `weights_sha256` (a digest of the weights the graph was exported
from: a graph of another checkpoint with the same shape and labels is told apart by it),
`quantization` (`none`, or `int8` with its settings and parity: export.quantize), and the
feature recipe (`export.recipe`) that rebuilds the input from audio without fastast.

An ElasticAST takes clips of any length; a graph takes one. It is exported at a chosen length
(`frames`) and time resolution q (frames every 10 ms × q) as the fixed AST it is at that length
(`ElasticAST.fixed_length`), and the graph is checked against the ElasticAST itself.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastast_cli import __version__
from fastast_cli.atomic import atomic_path
from fastast_cli.data.elastic_features import shift_for_resolution
from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.errors import FastASTError
from fastast_cli.export.extras import import_extra
from fastast_cli.export.one_length import at_one_length
from fastast_cli.export.onnx_session import open_session
from fastast_cli.export.quantize import (
    INT8_SETTINGS,
    PARITY_CLIPS,
    QuantParity,
    audio_features,
    check_quantization,
    int8_parity,
    parity_record,
    quantize_int8,
    set_metadata,
)
from fastast_cli.export.recipe import feature_recipe
from fastast_cli.inference.clips import clip_features, input_spec
from fastast_cli.inference.scores import label_names, num_classes_of, score_kind
from fastast_cli.models.reduction import DEFAULT_METHOD

PathLike = str | os.PathLike[str]
INPUT_NAME = "fbank"
OUTPUT_NAME = "logits"
DEFAULT_TOLERANCE = 1e-3  # largest accepted |ONNX - PyTorch| logit difference
EXPORT_BATCH = 2  # traced batch size; parity runs at other sizes to prove the axis is dynamic
PARITY_BATCH = 3


@dataclass
class ExportReport:
    """Where the graph went and how far its logits are from PyTorch's on each kind of input
    (those of the fp32 graph; an int8 graph's parity in `int8`)."""

    path: Path
    max_diff_random: float
    max_diff_features: float
    metadata: dict[str, Any]
    int8: QuantParity | None = None


def onnx_metadata(model: nn.Module, method: str, resolution: float = 1.0,
                  architecture: str | None = None) -> dict[str, Any]:
    """What a user of the ONNX file needs besides the graph (values JSON-serialisable).

    model: the fixed-length model the graph holds; resolution: the time resolution q its
    input is read at (frames every 10 ms × q); architecture: the exported checkpoint's
    (default the model's own; `elastic` for an ElasticAST exported at one length)."""
    spec = input_spec(model)
    r_schedule = list(getattr(model, "r_schedule", []))
    recipe = feature_recipe(spec, spec.target_length, shift_for_resolution(resolution),
                            score_kind(model))
    return {
        "labels": label_names(model, num_classes_of(model)),
        "mean": spec.mean,
        "std": spec.std,
        "normalization": "(fbank - mean) / (2 * std)",
        "sample_rate": SAMPLE_RATE,
        "frames": spec.target_length,
        "num_mel_bins": spec.num_mel_bins,
        "r": r_schedule[0] if len(set(r_schedule)) == 1 else (r_schedule or 0),  # 0: no merging
        "r_schedule": r_schedule,
        "method": method if any(r_schedule) else "none",
        "proportional_attention": bool(getattr(model, "proportional_attention", False)),
        "weights_sha256": weights_digest(model),
        "producer": f"fastast {__version__}",
        "architecture": architecture or getattr(model, "architecture", type(model).__name__),
        "resolution": resolution,
        "quantization": "none",
        **recipe,
    }


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of `model`'s state dict (names, dtypes, shapes and values, in order): which
    weights an exported graph holds."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of an ONNX file written by `export_onnx`, values decoded from JSON."""
    onnx = import_extra("onnx", "reading ONNX files")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several kinds
        raise FastASTError(f"{path} is not a readable ONNX file ({error})") from None
    values = {}
    for entry in model.metadata_props:
        try:
            values[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            values[entry.key] = entry.value
    return values


def export_onnx(
    model: nn.Module,
    path: PathLike,
    *,
    method: str = DEFAULT_METHOD,
    tolerance: float = DEFAULT_TOLERANCE,
    features: torch.Tensor | None = None,
    frames: int | None = None,
    resolution: float = 1.0,
    quantize: str = "none",
) -> ExportReport:
    """Export `model` (eval mode, at its current merging) to `path` and check it against PyTorch.

    features: normalized fbank of real clips [B, frames, bins] for the parity check (e.g. from
        `dataset_features`; the fp32 check takes the first `PARITY_BATCH`, the int8 one all);
        by default synthetic audio through the same feature pipeline.
    frames, resolution: for an ElasticAST (native-length input), the one input length of the
        graph and the time resolution q its input is read at; fixed-length models take their
        own length (frames None) at q = 1.
    quantize: `int8` writes onnxruntime's dynamic int8 quantization of the checked fp32 graph
        (export.quantize) and measures its top-1 agreement and max probability difference
        against PyTorch on real-feature input.
    The file is written beside `path` first and only moved there once the parity check passed:
    a failed check raises FastASTError and leaves nothing behind.
    """
    quantize = check_quantization(quantize)
    import_extra("onnxscript", "ONNX export")
    import_extra("onnxruntime", "the ONNX parity check")
    if any(t.device.type != "cpu" for t in model.state_dict().values()):
        model = copy.deepcopy(model).cpu()  # export on CPU, the caller's model stays where it is
    model.eval()
    graph_model = at_one_length(model, frames, resolution)
    metadata = onnx_metadata(graph_model, method, resolution, model.architecture)
    path = Path(path)
    with atomic_path(path) as temporary, tempfile.TemporaryDirectory() as folder:
        fp32_file = temporary if quantize == "none" else Path(folder) / "fp32.onnx"
        program = _trace(graph_model, metadata)
        for key, value in metadata.items():
            program.model.metadata_props[key] = json.dumps(value)
        program.save(str(fp32_file))
        session = open_session(fp32_file)
        noise, synthetic = parity_inputs(graph_model, shift_for_resolution(resolution))
        batches = [noise, synthetic if features is None else features[:PARITY_BATCH]]
        diffs = [_max_difference(model, session, batch) for batch in batches]
        if not all(diff <= tolerance for diff in diffs):
            raise FastASTError(
                f"the ONNX graph differs from PyTorch by up to {max(diffs):.2e} in the logits "
                f"(tolerance {tolerance:g}); nothing written to {path}"
            )
        parity = None
        if quantize == "int8":
            source = "evaluation clips" if features is not None else "synthetic clips"
            if features is None:
                features = audio_features(graph_model, PARITY_CLIPS,
                                          shift_for_resolution(resolution))
            metadata, parity = _write_int8(model, fp32_file, temporary, metadata, features,
                                           source)
    return ExportReport(path, diffs[0], diffs[1], metadata, parity)


def _write_int8(model: nn.Module, fp32_file: Path, target: Path, metadata: dict[str, Any],
                features: torch.Tensor, source: str) -> tuple[dict[str, Any], QuantParity]:
    """Quantize the checked fp32 graph to int8, measure its parity against `model` on
    `features` [N, frames, bins] (of `source`) and write it to `target` with `metadata`
    extended by the quantization and the parity."""
    graph = quantize_int8(fp32_file)
    try:
        session = open_session(graph.SerializeToString())
    except Exception as error:  # onnxruntime raises its own exception types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
        raise FastASTError(f"onnxruntime cannot run the int8 graph ({reason})") from None
    parity = int8_parity(model, lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0],
                         features, source)
    metadata = {**metadata, "quantization": "int8", "quantization_settings": INT8_SETTINGS,
                "int8_parity": parity_record(parity)}
    set_metadata(graph, metadata)
    import_extra("onnx", "int8 quantization").save(graph, str(target))
    return metadata, parity


def _trace(model: nn.Module, metadata: dict[str, Any]) -> Any:
    """torch.onnx.export (dynamo) with a dynamic batch axis; its chatter is kept off the screen."""
    example = torch.randn(EXPORT_BATCH, metadata["frames"], metadata["num_mel_bins"])
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                custom_translation_table=_translations(), verbose=False,
            )
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FastASTError(f"ONNX export failed: {reason}") from None


def _translations() -> dict[Any, Any]:
    """ONNX for ops the exporter lacks: the stable sort of bipartite soft matching."""
    opset = import_extra("onnxscript", "ONNX export").opset18

    def stable_sort(values, stable=None, dim: int = -1, descending: bool = False):
        """aten.sort.stable as TopK over the whole axis: ONNX TopK keeps the lower index first
        among equal values, which is exactly a stable sort."""
        end = None if dim == -1 else dim + 1
        length = opset.Shape(values, start=dim, end=end)
        return opset.TopK(values, length, axis=dim, largest=int(descending), sorted=1)

    return {torch.ops.aten.sort.stable: stable_sort}


def parity_inputs(model: nn.Module, frame_shift_ms: float = 10.0, seed: int = 0
                  ) -> list[torch.Tensor]:
    """Two batches [PARITY_BATCH, frames, bins]: standard normal noise, and normalized fbank of
    synthetic audio (chirps in noise) made by the same feature pipeline as real clips, with
    frames every `frame_shift_ms`."""
    spec = replace(input_spec(model), frame_shift_ms=frame_shift_ms)
    generator = torch.Generator().manual_seed(seed)
    shape = (PARITY_BATCH, spec.target_length, spec.num_mel_bins)
    noise = torch.randn(shape, generator=generator)
    seconds = spec.target_length * frame_shift_ms / 1000 + 0.05
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clips = []
    for index in range(PARITY_BATCH):
        start, stop = 200.0 * (index + 1), 2000.0 * (index + 1)
        phase = 2 * math.pi * (start * time + (stop - start) * time**2 / (2 * seconds))
        wave = 0.3 * torch.sin(phase) + 0.05 * torch.randn(time.shape, generator=generator)
        clips.append(clip_features(wave, SAMPLE_RATE, spec)[: spec.target_length])
    return [noise, torch.stack(clips)]


def _max_difference(model: nn.Module, session: Any, batch: torch.Tensor) -> float:
    """Largest |ONNX - PyTorch| logit of `batch` [B, frames, bins]; a native-length model
    reads it as B clips."""
    with torch.inference_mode():
        expected = model(list(batch) if model.input_spec().native_length else batch).float()
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0])
    return float((got - expected).abs().max())
