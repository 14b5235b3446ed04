"""Every onnxruntime session fastast opens has thread spinning switched off (export.onnx_session):
an idle ORT worker spinning after `run` would take the cores from whatever runs next (PyTorch in
an interleaved benchmark or in `--backend auto`'s measurement)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from fastast_cli import build_model
from fastast_cli.export.onnx_session import SESSION_CONFIG, open_session, session_options

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")
pytestmark = pytest.mark.usefixtures("one_thread")
SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def spinning_of(options) -> dict[str, str | None]:
    """The spinning entries of SessionOptions `options` (None where unset)."""
    values = {}
    for key in SPINNING_KEYS:
        try:
            values[key] = options.get_session_config_entry(key)
        except Exception:  # onnxruntime raises for a key never set
            values[key] = None
    return values


def test_the_options_fastast_builds_switch_spinning_off():
    options = session_options(threads=2)
    assert spinning_of(options) == dict.fromkeys(SPINNING_KEYS, "0")
    assert options.intra_op_num_threads == 2
    assert set(SPINNING_KEYS) <= set(SESSION_CONFIG)


def test_every_session_of_export_and_the_onnx_backends_has_spinning_off(monkeypatch, tmp_path):
    """int8 export (fp32 and int8 parity sessions), then both onnxruntime backends: every
    InferenceSession fastast creates reads back allow_spinning = 0 in both pools (those
    onnxruntime's quantization pre-processing opens for itself are not fastast's)."""
    from fastast_cli.export.onnx_export import export_onnx
    from fastast_cli.inference.backends import make_forward

    opened = []

    class Recording(ort.InferenceSession):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("fastast_cli"):
                opened.append(self)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    torch.manual_seed(0)
    model = build_model("tiny", 3, target_length=64, depth=1, labels=["a", "b", "c"]).eval()
    fbank = torch.randn(2, 64, 128)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32, method="tome")
    export_onnx(model, int8, method="tome", quantize="int8")
    for backend, path in (("onnxruntime", fp32), ("onnxruntime-int8", int8)):
        assert make_forward(model, backend, onnx_file=path)(fbank).shape == (2, 3)
    assert len(opened) >= 5  # fp32 check ×2, int8 parity, two backends
    for session in opened:
        assert spinning_of(session.get_session_options()) == dict.fromkeys(SPINNING_KEYS, "0")


def test_open_session_reads_files_and_serialized_graphs(tmp_path):
    from fastast_cli.export.onnx_export import export_onnx

    model = build_model("tiny", 2, target_length=64, depth=1, labels=["a", "b"]).eval()
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, method="tome")
    for graph in (path, path.read_bytes()):
        session = open_session(graph, threads=1)
        assert spinning_of(session.get_session_options()) == dict.fromkeys(SPINNING_KEYS, "0")
        assert session.get_session_options().intra_op_num_threads == 1


def test_no_module_opens_an_inference_session_but_the_factory():
    package = Path(__file__).resolve().parents[1] / "fastast_cli"
    factory = package / "export" / "onnx_session.py"
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path != factory and re.search(r"InferenceSession\s*\(", path.read_text())]
    assert offenders == []
