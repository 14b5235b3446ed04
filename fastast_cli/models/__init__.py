"""Models: the AST with token merging, checkpoint loading, and (later) teachers."""

from fastast_cli.models.ast import AST, ASTConfig, build_model
from fastast_cli.models.checkpoints import (
    init_from_pretrained,
    load_model,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "AST",
    "ASTConfig",
    "build_model",
    "init_from_pretrained",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]
