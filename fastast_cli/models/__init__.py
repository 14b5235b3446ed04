"""Models: the AST with token merging, checkpoint loading, and (later) teachers."""

from fastast_cli.models.ast import AST, ASTConfig, build_model

__all__ = ["AST", "ASTConfig", "build_model"]
