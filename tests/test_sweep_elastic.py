"""`fastast sweep --data` times an ElasticAST on the split's clips at their real lengths,
packed, beside a fixed AST timed on input padded to its length."""

from __future__ import annotations

import csv

import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation import sweep as sweep_module
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.elastic import ElasticAST

pytestmark = pytest.mark.usefixtures("one_thread")


def test_elastic_is_timed_on_real_lengths_packed_beside_the_padded_fixed_ast(
        small_demo, tmp_path, monkeypatch):
    manifest = load_manifest(small_demo)
    mean, std = manifest.norm_stats()
    torch.manual_seed(0)
    fixed = build_model("tiny", 10, target_length=400, depth=2, fstride=16, tstride=16,
                        labels=manifest.label_names)  # 8 × 25 patches: 202 tokens, padded
    elastic = ElasticAST.from_ast(fixed, target_length=512)  # padded, it would read 258 tokens
    paths = {}
    for name, model in (("fixed", fixed), ("elastic", elastic)):
        paths[name] = save_checkpoint(tmp_path / f"{name}.pt", model, mean=mean, std=std,
                                      metric="accuracy")
    timed = []
    measure = sweep_module.sweep_throughputs
    monkeypatch.setattr(sweep_module, "sweep_throughputs", lambda models, rs, **options: (
        timed.append([(model.architecture, batch) for model, batch
                      in zip(models, options["inputs"], strict=True)])
        or measure(models, rs, **options)))
    out = tmp_path / "sweep.csv"
    result = CliRunner().invoke(app, [
        "sweep", "--device", "cpu", "--warmup", "0", "--runs", "1", "--batch-size", "2",
        "--data", str(small_demo), "--checkpoint", f"fixed={paths['fixed']}",
        "--checkpoint", f"elastic={paths['elastic']}", "--r", "0,4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "ElasticAST runs are timed on 2 clips of the" in text and "real lengths" in text

    # the timing batch of the ElasticAST: 2 clips of the split at their own lengths
    entries = read_datafile(manifest.datafile(manifest.eval_split))
    chosen = [entries[0], entries[len(entries) // 2]]  # evenly spread over the split
    frames = [1 + (sf.info(str(entry.wav)).frames - 400) // 160 for entry in chosen]
    (batches,) = timed
    by_kind = dict(batches)
    assert by_kind["ast"] is None  # random input padded to 400 frames
    assert [len(clip) for clip in by_kind["elastic"]] == frames
    tokens = [2 + 8 * (count // 16) for count in frames]  # CLS, DIST, 8 × t patches
    real = round(sum(tokens) / len(tokens))
    rows = {(row["run"], int(row["r"])): row for row in csv.DictReader(out.open())}
    assert int(rows["elastic", 0]["tokens"]) == real < 258
    assert int(rows["elastic", 4]["tokens"]) == real - 2 * 4  # r = 4 in each of 2 blocks
    assert int(rows["fixed", 0]["tokens"]) == 202  # the padded fixed AST, beside it
    assert int(rows["fixed", 4]["tokens"]) == 202 - 2 * 4
    assert float(rows["elastic", 0]["gflops"]) < float(rows["fixed", 0]["gflops"])
