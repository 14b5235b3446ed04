"""`fastast prepare` engines, one module per dataset; each returns a PrepareReport."""

from fastast_cli.data.prepare.audioset import prepare_audioset
from fastast_cli.data.prepare.demo import generate_demo, prepare_demo
from fastast_cli.data.prepare.esc50 import prepare_esc50
from fastast_cli.data.prepare.folder import prepare_folder
from fastast_cli.data.prepare.speechcommands import SPEECHCOMMANDS_LABELS, prepare_speechcommands
from fastast_cli.data.prepare.workspace import PrepareReport

__all__ = [
    "SPEECHCOMMANDS_LABELS",
    "PrepareReport",
    "generate_demo",
    "prepare_audioset",
    "prepare_demo",
    "prepare_esc50",
    "prepare_folder",
    "prepare_speechcommands",
]
