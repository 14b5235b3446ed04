"""int8 ONNX graphs: onnxruntime's dynamic quantization of the linear layers, and their parity.

An fp32 graph from `export_onnx` (merging baked in) is first pre-processed as onnxruntime
recommends (`quant_pre_process`: symbolic shape inference, graph optimization, ONNX shape
inference), then `quantize_dynamic` turns every MatMul and Gemm with a constant weight (the
linear layers: patch projection, qkv, attention output, MLP, head) into
DynamicQuantizeLinear + MatMulInteger: weights stored as signed int8 (QInt8, one scale per
tensor), activations quantized to uint8 on the fly, batch by batch. u8 × s8 is the product
onnxruntime's CPU kernels (MLAS) are fastest at on x86 (AVX2, AVX-512, VNNI) and Arm. The
attention products (Q·Kᵀ, softmax·V) have no constant weight and stay fp32, as do LayerNorm,
softmax and the merge step.

Parity is what a user of the scores sees: on real-feature input (clips of a dataset, else
synthetic audio through the same fbank pipeline; never random tensors) the share of clips
whose top-1 class is the model's, and the largest difference of a class probability
(softmax or sigmoid, as `predict` scores) from PyTorch's.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastast_cli.data.features import SAMPLE_RATE
from fastast_cli.errors import FastASTError
from fastast_cli.export.extras import import_extra
from fastast_cli.inference.clips import clip_features, input_spec
from fastast_cli.inference.scores import score_kind, to_scores

QUANTIZATIONS = ("none", "int8")
QUANTIZED_OPS = ("MatMul", "Gemm")
# What `quantize_dynamic` is asked for, recorded in the graph's metadata.
INT8_SETTINGS = {"method": "onnxruntime quantize_dynamic", "ops": list(QUANTIZED_OPS),
                 "weights": "int8 (QInt8), per tensor", "activations": "uint8, dynamic"}
PARITY_CLIPS = 32  # clips the int8 graph is compared on
PARITY_CHUNK = 8  # clips per forward pass while comparing
MIN_AGREEMENT = 0.99  # below this top-1 agreement the export warns and `auto` skips int8


@dataclass(frozen=True)
class QuantParity:
    """How closely an int8 graph follows the model on `clips` real-feature inputs (`source`
    says which): the share of clips with the same top-1 class, and the largest difference of
    a class probability."""

    top1_agreement: float
    max_prob_diff: float
    clips: int
    source: str

    def describe(self) -> str:
        return (f"top-1 agreement {100 * self.top1_agreement:.1f} % and max probability "
                f"difference {self.max_prob_diff:.4f} on {self.clips} {self.source}")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> QuantParity | None:
        """The parity recorded in a graph's metadata (None when absent or unreadable)."""
        try:
            return cls(**metadata["int8_parity"])
        except (KeyError, TypeError):
            return None


def check_quantization(name: str | None) -> str:
    """`name` ("none" for None) when it is a known quantization, else a FastASTError."""
    name = name or "none"
    if name not in QUANTIZATIONS:
        raise FastASTError(f"unknown quantization {name!r}: choose {', '.join(QUANTIZATIONS)}")
    return name


def quantize_int8(source: Path) -> Any:
    """The int8 version (an onnx ModelProto) of the fp32 graph at `source`. A graph
    onnxruntime cannot quantize is a FastASTError."""
    onnx = import_extra("onnx", "int8 quantization")
    quantization = import_extra("onnxruntime.quantization", "int8 quantization")
    with tempfile.TemporaryDirectory(prefix="fastast-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        _quiet(lambda: _preprocess(source, prepared))
        quantized = Path(folder) / "int8.onnx"
        try:
            _quiet(lambda: quantization.quantize_dynamic(
                prepared, quantized, op_types_to_quantize=list(QUANTIZED_OPS),
                weight_type=quantization.QuantType.QInt8, per_channel=False))
        except Exception as error:  # onnxruntime raises many kinds
            raise FastASTError(f"int8 quantization failed: {_first_line(error)}") from None
        return onnx.load(str(quantized))


def set_metadata(graph: Any, metadata: dict[str, Any]) -> None:
    """Replace the metadata_props of the ModelProto `graph` by `metadata` (JSON values)."""
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))


def _preprocess(source: Path, target: Path) -> None:
    """onnxruntime's recommended pre-processing; symbolic shape inference is left out when it
    cannot follow the graph (it is an aid to the quantizer, not required)."""
    shape_inference = import_extra("onnxruntime.quantization.shape_inference",
                                   "int8 quantization")
    try:
        shape_inference.quant_pre_process(source, target)
    except Exception:
        try:
            shape_inference.quant_pre_process(source, target, skip_symbolic_shape=True)
        except Exception as error:
            raise FastASTError(f"int8 quantization failed in onnxruntime's pre-processing: "
                               f"{_first_line(error)}") from None


def _quiet(work: Callable[[], Any]) -> Any:
    """`work()` with onnxruntime's quantization chatter (prints, warnings) kept off the screen."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return work()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def quantized_op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph at `path` has (e.g. MatMulInteger)."""
    onnx = import_extra("onnx", "reading ONNX files")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def int8_parity(model: nn.Module, run_graph: Callable[[np.ndarray], np.ndarray],
                features: torch.Tensor, source: str) -> QuantParity:
    """Top-1 agreement and max probability difference of the graph run by `run_graph`
    (fbank [B, T, F] array → logits [B, C] array) against `model` (fp32 PyTorch) on
    `features` [N, T, F], compared `PARITY_CHUNK` clips at a time."""
    kind = score_kind(model)
    agree, largest = 0, 0.0
    for chunk in features.split(PARITY_CHUNK):
        with torch.inference_mode():
            expected = model(list(chunk) if model.input_spec().native_length else chunk).float()
        got = torch.from_numpy(run_graph(chunk.numpy()))
        agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
        difference = (to_scores(got, kind) - to_scores(expected, kind)).abs().max()
        largest = max(largest, float(difference))
    return QuantParity(agree / len(features), largest, len(features), source)


def audio_features(model: nn.Module, count: int = PARITY_CLIPS, frame_shift_ms: float = 10.0,
                   seed: int = 0) -> torch.Tensor:
    """Normalized fbank [count, frames, bins] of varied synthetic audio (rising and falling
    chirps, harmonic tones, noise bursts at several levels) through the model's feature
    pipeline, for when no dataset is at hand."""
    spec = replace(input_spec(model), frame_shift_ms=frame_shift_ms)
    generator = torch.Generator().manual_seed(seed)
    seconds = spec.target_length * frame_shift_ms / 1000 + 0.05
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clips = []
    for index in range(count):
        low, high = (80.0 + 7000.0 * torch.rand(2, generator=generator)).tolist()
        kind = index % 3
        if kind == 0:  # a chirp from `low` to `high` Hz
            phase = 2 * math.pi * (low * time + (high - low) * time**2 / (2 * seconds))
            wave = torch.sin(phase)
        elif kind == 1:  # a tone with harmonics, pulsing
            wave = sum(torch.sin(2 * math.pi * low / 4 * h * time) / h for h in (1, 2, 3))
            wave = wave * (0.5 + 0.5 * torch.sin(2 * math.pi * (1 + high / 2000) * time))
        else:  # noise bursts
            bursts = (torch.sin(2 * math.pi * (0.5 + high / 1000) * time) > 0).float()
            wave = torch.randn(time.shape, generator=generator) * bursts
        level = 10 ** (-2 * float(torch.rand(1, generator=generator)))  # 0 to -40 dB
        wave = level * 0.5 * wave + 0.01 * torch.randn(time.shape, generator=generator)
        clips.append(clip_features(wave, SAMPLE_RATE, spec)[: spec.target_length])
    return torch.stack(clips)


def parity_record(parity: QuantParity) -> dict[str, Any]:
    """The parity as the graph's metadata holds it (`int8_parity`)."""
    return asdict(parity)
