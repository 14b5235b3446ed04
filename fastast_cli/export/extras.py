"""Optional packages of the `export` extra, imported with a one-line message when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastast_cli.errors import FastASTError

EXPORT_EXTRA = "pip install 'fastast[export]'"


def import_extra(name: str, purpose: str) -> ModuleType:
    """Import the optional module `name` (onnx, onnxruntime, onnxscript) needed for `purpose`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise FastASTError(
            f"{purpose} needs the optional package {name}: {EXPORT_EXTRA}"
        ) from None
