"""`fastast export`: an ONNX graph with merging baked in, or a Hugging Face AST folder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fastast_cli.atomic import check_output
from fastast_cli.cli._app import app, console, user_errors
from fastast_cli.cli._merging import (
    MethodOption,
    ProportionalAttentionOption,
    ScheduleOption,
    merge_r_option,
    method_name,
    schedule_name,
)
from fastast_cli.data.manifest import load_manifest
from fastast_cli.errors import FastASTError
from fastast_cli.export.hf import export_hf, head_eps_note
from fastast_cli.export.onnx_export import DEFAULT_TOLERANCE, PARITY_BATCH, export_onnx
from fastast_cli.export.parity import dataset_features
from fastast_cli.export.quantize import MIN_AGREEMENT, PARITY_CLIPS
from fastast_cli.export.reduction import apply_reduction
from fastast_cli.models.classifiers import load_classifier
from fastast_cli.models.reduction import DEFAULT_METHOD
from fastast_cli.models.reduction.settings import MergeSettings, capped_note, merging_of


class Format(str, Enum):
    onnx = "onnx"
    hf = "hf"


class Quantization(str, Enum):
    none = "none"
    int8 = "int8"


@app.command(
    help="Export a checkpoint for use outside fastast. onnx: normalized fbank (batch × frames × "
    "mel bins) in, logits out, token merging at --r baked in, dynamic batch axis; labels, "
    "normalization, sample rate, frames, r, method and proportional attention in the file's "
    "metadata; merging as the checkpoint was trained unless flags say otherwise; checked against "
    "PyTorch on random input and on audio features (--data clips, else synthetic audio) before "
    "it is written. hf: a transformers "
    "ASTForAudioClassification folder (config.json, model.safetensors, preprocessor_config.json "
    "with the input mean/std) of a fixed-length AST, without merging. An ElasticAST is "
    "exported at one length (--frames) as the fixed AST it is there, checked against itself; "
    "onnx also at a time resolution (--resolution q: frames every 10 ms × q). The onnx "
    "metadata also holds the feature recipe (fbank settings, padding, score activation, "
    "windows for long files): examples/onnx_predict.py rebuilds `fastast predict` from it. "
    "--quantize int8: the linear layers in int8 (onnxruntime's dynamic quantization, for "
    "CPUs; run it with --backend onnxruntime-int8), its top-1 agreement and max probability "
    "difference against PyTorch measured on real features and recorded."
)
@user_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(
        help="fastast checkpoint, original AST .pth or Hugging Face AST folder.")],
    out: Annotated[Path, typer.Option(
        help="The .onnx file (onnx) or a new folder (hf); an existing one is never replaced.")],
    kind: Annotated[Format, typer.Option("--format", help="onnx or hf.")] = Format.onnx,
    r: Annotated[int | None, merge_r_option("onnx")] = None,
    method: MethodOption = None,
    schedule: ScheduleOption = None,
    proportional_attention: ProportionalAttentionOption = None,
    tolerance: Annotated[float, typer.Option(
        min=0.0, help="Largest accepted difference between ONNX and PyTorch logits.")
    ] = DEFAULT_TOLERANCE,
    data: Annotated[Path | None, typer.Option(
        help="Prepared dataset (manifest.yaml or folder): check the ONNX graph on its first "
        "evaluation clips (default: synthetic audio through the same features).")] = None,
    frames: Annotated[int | None, typer.Option(
        min=16, help="ElasticAST only: the input length of the export, in frames (e.g. 1024 "
        "= 10.24 s at q = 1); fixed ASTs take their own.", show_default=False)] = None,
    resolution: Annotated[float, typer.Option(
        help="ElasticAST with --format onnx only: time resolution q "
        "of the input (frames every 10 ms × q).")] = 1.0,
    quantize: Annotated[Quantization, typer.Option(
        help="--format onnx only: none (fp32) or int8 (onnxruntime's dynamic quantization of "
        "the linear layers: int8 weights, activations quantized on the fly; the attention "
        "products, norms and merging stay fp32). Reports top-1 agreement and max probability "
        f"difference against PyTorch on {PARITY_CLIPS} clips (--data's, else synthetic audio)."
    )] = Quantization.none,
) -> None:
    """Load, set merging, export, report."""
    if kind is Format.hf and r:
        raise FastASTError("transformers' AST has no token merging: export --format hf with "
                           "--r 0, or use --format onnx for a merged model")
    if kind is Format.hf and quantize is not Quantization.none:
        raise FastASTError("--quantize applies to --format onnx: a transformers folder holds "
                           "the fp32 weights")
    check_output(out, folder=kind is Format.hf)
    if kind is Format.onnx and out.exists():
        raise FastASTError(f"{out} already exists: remove it or pick another --out")
    model = load_classifier(checkpoint, r, schedule=schedule_name(schedule),
                            proportional_attention=proportional_attention,
                            method=method_name(method))
    settings = merging_of(model)  # None: a CNN or PaSST checkpoint, which never merges
    if kind is Format.hf:
        files = export_hf(model, out, frames, resolution)
        console.print(f"wrote {', '.join(file.name for file in files)} in {out}")
        if settings is not None and _merges(settings):
            console.print(f"note: transformers' AST has no token merging: the folder holds the "
                          f"model without the r={settings.r} it was trained with (r = 0)")
        eps_note = head_eps_note(model)
        if eps_note:
            console.print(f"note: {eps_note}")
        return
    if settings is not None:  # merging set by load_classifier
        method = settings.method
    else:
        method = method_name(method) or DEFAULT_METHOD
        apply_reduction(model, method, r or 0)
    note = capped_note(model)  # a capped r, from the checkpoint's settings or the flags
    if note:
        console.print(note)
    clips = PARITY_CLIPS if quantize is Quantization.int8 else PARITY_BATCH
    features = (dataset_features(model, load_manifest(data), clips, frames=frames,
                                 resolution=resolution) if data is not None else None)
    report = export_onnx(model, out, method=method, tolerance=tolerance, features=features,
                         frames=frames, resolution=resolution, quantize=quantize.value)
    merging = settings.describe() if settings is not None else "no merging"
    if frames is not None:
        merging += f"; {frames} frames every {report.metadata['frame_shift_ms']:g} ms"
    console.print(
        f"wrote {report.path} ({merging}{', int8' if report.int8 else ''}); "
        f"{'before quantization, ' if report.int8 else ''}max "
        f"|ONNX - PyTorch| logit difference: {report.max_diff_random:.2e} on random input, "
        f"{report.max_diff_features:.2e} on {'clips of ' + str(data) if data else 'audio'} "
        f"features (tolerance {tolerance:g})"
    )
    if report.int8 is not None:
        source = f"clips of {data}" if data else "synthetic audio clips"
        console.print(f"int8 (--backend onnxruntime-int8): top-1 agreement "
                      f"{100 * report.int8.top1_agreement:.1f} %, max probability difference "
                      f"{report.int8.max_prob_diff:.4f} on {report.int8.clips} {source}")
        if report.int8.top1_agreement < MIN_AGREEMENT:
            console.print(f"warning: below {100 * MIN_AGREEMENT:g} % top-1 agreement the int8 "
                          "graph ranks classes unlike the model; `--backend auto` will not "
                          "pick it (the fp32 export keeps the model's scores)")


def _merges(settings: MergeSettings) -> bool:
    """Whether the settings merge any tokens (r an int, a per-block list or a fraction)."""
    return any(settings.r) if isinstance(settings.r, list | tuple) else bool(settings.r)
