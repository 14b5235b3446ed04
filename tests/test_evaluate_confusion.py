"""Confusion matrix and per-class accuracy of single-label evaluations (`evaluate --out`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.manifest import load_manifest
from fastast_cli.evaluation.evaluate import Evaluation, save_evaluation
from fastast_cli.evaluation.metrics import compute_metrics
from fastast_cli.models.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as stream:
        return list(csv.reader(stream))


def evaluation_of(logits: list[list[float]], truth: list[int], labels: list[str]) -> Evaluation:
    scores = torch.tensor(logits)
    targets = torch.nn.functional.one_hot(torch.tensor(truth), len(labels)).float()
    return Evaluation("m.pt", "eval", None, compute_metrics(scores.numpy(), targets.numpy()),
                      scores, targets, [f"c{i}.wav" for i in range(len(truth))], labels)


def test_confusion_counts_and_class_accuracy_on_a_hand_checked_case(tmp_path: Path) -> None:
    # 5 clips: dog → dog, dog → cat, cat → cat, cat → cat, bird → dog; no clip is a fish.
    labels = ["dog", "cat", "bird", "fish"]
    logits = [[3, 1, 0, 0], [0, 2, 1, 0], [0, 5, 0, 0], [1, 2, 0, 0], [4, 0, 1, 0]]
    written = save_evaluation(evaluation_of(logits, [0, 0, 1, 1, 2], labels), tmp_path)
    assert [path.name for path in written][-2:] == ["confusion.csv", "class_accuracy.csv"]
    assert read_rows(tmp_path / "confusion.csv") == [
        ["true", "dog", "cat", "bird", "fish"],
        ["dog", "1", "1", "0", "0"],
        ["cat", "0", "2", "0", "0"],
        ["bird", "1", "0", "0", "0"],
        ["fish", "0", "0", "0", "0"],
    ]
    assert read_rows(tmp_path / "class_accuracy.csv") == [
        ["index", "label", "clips", "correct", "accuracy", "split"],
        ["0", "dog", "2", "1", "0.500000", "eval"],
        ["1", "cat", "2", "2", "1.000000", "eval"],
        ["2", "bird", "1", "0", "0.000000", "eval"],
        ["3", "fish", "0", "0", "", "eval"],  # no clip: no accuracy
    ]


def test_multi_label_data_gets_no_confusion_matrix(tmp_path: Path) -> None:
    evaluation = evaluation_of([[1, 0], [0, 1]], [0, 1], ["a", "b"])
    evaluation.targets[0, 1] = 1  # two classes in one clip
    names = [path.name for path in save_evaluation(evaluation, tmp_path)]
    assert "confusion.csv" not in names and not (tmp_path / "confusion.csv").exists()


def test_evaluate_out_writes_the_confusion_matrix_of_its_predictions(small_demo: Path,
                                                                     tmp_path: Path) -> None:
    manifest = load_manifest(small_demo)
    torch.manual_seed(0)
    model = build_model("tiny", manifest.num_classes, target_length=200, depth=2, fstride=16,
                        tstride=16, labels=manifest.label_names)
    checkpoint = save_checkpoint(tmp_path / "m.pt", model, mean=-5.0, std=4.0)
    out = tmp_path / "eval"
    (out).mkdir()
    (out / "confusion.csv").write_text("mine\n")  # a file of the user's is never replaced
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(small_demo), "--out",
            str(out), "--device", "cpu"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "not an evaluation's confusion table" in refused.output
    (out / "confusion.csv").unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "confusion.csv, class_accuracy.csv" in " ".join(result.output.split())
    rows = read_rows(out / "confusion.csv")
    assert rows[0] == ["true", *manifest.label_names]
    counts = [[int(n) for n in row[1:]] for row in rows[1:]]
    predictions = read_rows(out / "predictions.csv")[1:]  # clip, split, predicted, target, ...
    index = {name: i for i, name in enumerate(manifest.label_names)}
    expected = [[0] * len(index) for _ in index]
    for _, _, predicted, target, _ in predictions:
        expected[index[target]][index[predicted]] += 1
    assert counts == expected
    accuracy = json.loads((out / "metrics.json").read_text())["accuracy"]
    correct = sum(counts[i][i] for i in range(len(counts)))
    assert correct / len(predictions) == pytest.approx(accuracy)
