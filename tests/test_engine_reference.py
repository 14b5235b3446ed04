"""The engine reproduces the logits, token counts and sizes recorded before the one-engine
refactor (tests/fixtures/engine_reference.pt, made by tests/fixtures/make_engine_reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastast_cli.models.ast import AST, ASTConfig
from fastast_cli.models.elastic import ElasticAST, ElasticConfig

REFERENCE = Path(__file__).parent / "fixtures" / "engine_reference.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE, weights_only=True)


def test_fixed_ast_reproduces_reference(reference: dict) -> None:
    model = AST(ASTConfig.from_dict(reference["ast_config"])).eval()
    model.load_state_dict(reference["ast_state"])
    model.track_source = True
    with torch.no_grad():
        for case in reference["ast"]:
            model.set_r(case["r"], case["schedule"], case["proportional"])
            logits = model(reference["fbank"])
            torch.testing.assert_close(logits, case["logits"], atol=1e-5, rtol=0)
            state = model.last_state
            if case["sizes"] is None:
                assert state.sizes is None
            else:
                torch.testing.assert_close(state.sizes, case["sizes"], atol=0, rtol=0)
            torch.testing.assert_close(state.source, case["source"], atol=0, rtol=0)


def test_elastic_ast_reproduces_reference(reference: dict) -> None:
    model = ElasticAST(ElasticConfig.from_dict(reference["elastic_config"])).eval()
    model.load_state_dict(reference["elastic_state"])
    with torch.no_grad():
        for case in reference["elastic"]:
            model.set_r(case["r"], case["schedule"], case["proportional"])
            logits = model(reference["clips"])
            torch.testing.assert_close(logits, case["logits"], atol=1e-5, rtol=0)
            state = model.last_state
            assert list(state.layout.counts) == case["counts"]
            if case["sizes"] is None:
                assert state.sizes is None
            else:
                torch.testing.assert_close(state.sizes, case["sizes"], atol=0, rtol=0)
