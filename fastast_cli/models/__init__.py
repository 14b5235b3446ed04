"""Models: the AST with token merging, ElasticAST, teachers, and checkpoint loading."""

from fastast_cli.models.ast import AST, ASTConfig, build_model
from fastast_cli.models.checkpoints import (
    init_from_pretrained,
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from fastast_cli.models.elastic import ElasticAST, ElasticConfig, build_elastic

__all__ = [
    "AST",
    "ASTConfig",
    "ElasticAST",
    "ElasticConfig",
    "build_elastic",
    "build_model",
    "init_from_pretrained",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]
