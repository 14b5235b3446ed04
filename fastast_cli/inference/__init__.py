"""Inference on audio files: sliding-window scoring of clips of any length, rate and channels."""

from fastast_cli.inference.clips import (
    ClipFailure,
    ClipScores,
    InputSpec,
    PredictionRun,
    Predictor,
    load_predictor,
    predict_files,
)

__all__ = [
    "ClipFailure",
    "ClipScores",
    "InputSpec",
    "PredictionRun",
    "Predictor",
    "load_predictor",
    "predict_files",
]
