"""Checkpoints named by a Hugging Face Hub id, downloaded through huggingface_hub from a server
on 127.0.0.1 that answers as the Hub does (HEAD/GET /{repo}/resolve/{revision}/{file} with
X-Repo-Commit and ETag; X-Error-Code on a 404)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import safetensors.torch
import torch
from data_fixtures import local_server
from typer.testing import CliRunner

from fastast_cli import build_model, load_model
from fastast_cli.cli import app
from fastast_cli.errors import CheckpointError
from fastast_cli.export.hf import export_hf
from fastast_cli.models.checkpoints.hub import HubId, hub_id
from fastast_cli.models.classifiers import build_classifier

REPO = "MIT/ast-tiny-test"
MAIN, OLD = "a" * 40, "b" * 40  # commits: the default branch, and an older one


class HubHandler(BaseHTTPRequestHandler):
    """The Hub's file endpoint: `server.repos[repo][commit][file] = bytes`, `main` → MAIN.
    A file in `server.drop` gets its headers and half its body, then the connection closes."""

    def _answer(self, with_body: bool) -> None:
        server = self.server
        server.requests.append((self.command, self.path))  # type: ignore[attr-defined]
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        commits = server.repos.get(repo)  # type: ignore[attr-defined]
        if commits is None:
            return self._error(404, "RepoNotFound")
        commit = {"main": MAIN}.get(revision, revision)
        if commit not in commits:
            return self._error(404, "RevisionNotFound")
        data = commits[commit].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not with_body:
            return None
        if filename in server.drop:  # type: ignore[attr-defined]
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return None
        self.wfile.write(data)
        return None

    def _error(self, status: int, code: str) -> None:
        body = b'{"error": "not found"}'
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", "not found")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(with_body=True)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextmanager
def hub_server(repos: dict, drop: tuple[str, ...] = ()) -> Iterator[ThreadingHTTPServer]:
    with local_server(HubHandler, repos=repos, requests=[], drop=drop) as server:
        yield server


def tiny_ast(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("tiny", 3, target_length=64, depth=2, fstride=16, tstride=16,
                       labels=["a", "b", "c"])


def repo_files(model: torch.nn.Module, folder: Path) -> dict[str, bytes]:
    """A transformers AST repository's files, as `fastast export --format hf` writes them."""
    return {path.name: path.read_bytes() for path in export_hf(model, folder)}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub with REPO at two commits; HF_ENDPOINT and HF_HUB_CACHE point at it and a temporary
    cache."""
    new, old = tiny_ast(0), tiny_ast(1)
    repos = {REPO: {MAIN: repo_files(new, tmp_path / "new"),
                    OLD: repo_files(old, tmp_path / "old")}}
    with hub_server(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        yield server, new, old


def fbank() -> torch.Tensor:
    torch.manual_seed(5)
    return torch.randn(2, 64, 128)


def test_hub_ids_are_told_from_paths():
    assert hub_id("MIT/ast-finetuned-audioset-10-10-0.4593") == HubId(
        "MIT/ast-finetuned-audioset-10-10-0.4593")
    assert hub_id("MIT/ast-x@v1.0") == HubId("MIT/ast-x", "v1.0")
    assert hub_id("hf:/runs/best.pt") == HubId("runs/best.pt")  # explicit, as Path() folds it
    assert hub_id("timm/efficientnet_b2.ra_in1k") == HubId("timm/efficientnet_b2.ra_in1k")
    for path in ("runs/best.pt", "runs/kd/best.pt", "best.pt", "/abs/x", "../a/b", "a/..",
                 "weights/model.safetensors"):
        assert hub_id(path) is None, path


def test_a_hub_id_downloads_once_into_the_cache_and_loads_the_same_weights(hub, monkeypatch):
    server, new, old = hub
    loaded = load_model(REPO)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(fbank()), new(fbank()))
    assert ("HEAD", f"/{REPO}/resolve/main/config.json") in server.requests
    assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in server.requests
    # a revision, and the cache offline
    older = load_model(f"{REPO}@{OLD}")
    with torch.inference_mode():
        torch.testing.assert_close(older(fbank()), old(fbank()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    count = len(server.requests)
    again = load_model(REPO)
    assert len(server.requests) == count  # read from the cache, no request
    with torch.inference_mode():
        torch.testing.assert_close(again(fbank()), new(fbank()))


def no_waiting(monkeypatch) -> None:
    """huggingface_hub retries a cut download 5 times, 1 s apart: the same retries, no wait."""
    import time
    import types

    from huggingface_hub import file_download

    fast = types.ModuleType("time")
    fast.__dict__.update(vars(time))
    fast.sleep = lambda seconds: None
    monkeypatch.setattr(file_download, "time", fast, raising=False)


def test_hub_failures_are_one_line(hub, monkeypatch):
    server, _, _ = hub
    with pytest.raises(CheckpointError, match="no such checkpoint: MIT/missing is neither a local "
                                              "path nor a model on the Hugging Face Hub"):
        load_model("MIT/missing")
    with pytest.raises(CheckpointError, match="has no revision 'nope'"):
        load_model(f"{REPO}@nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="is not a local path, and its config.json is not "
                                              "in the Hugging Face cache \\(HF_HUB_OFFLINE"):
        load_model(f"{REPO}@{OLD}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    no_waiting(monkeypatch)
    server.drop = ("model.safetensors",)
    with pytest.raises(CheckpointError, match=f"{REPO}: downloading model.safetensors failed"):
        load_model(REPO)
    server.drop = ()  # the half-written file is not taken for the whole one
    with torch.inference_mode():
        torch.testing.assert_close(load_model(REPO)(fbank()), hub[1](fbank()))


def test_an_unreachable_hub_is_one_quick_line(tmp_path, monkeypatch):
    """No retries for half a minute: one HEAD, then the line."""
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=f"no such checkpoint: {REPO} is not a local path, "
                                              "and the Hugging Face Hub at http://127.0.0.1"):
        load_model(REPO)
    assert time.monotonic() - started < 10


def test_the_cli_says_one_line_for_a_missing_hub_model(hub, tmp_path):
    clip = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(clip, torch.zeros(16000).numpy(), 16000)
    result = CliRunner().invoke(app, ["predict", str(clip), "--checkpoint", "MIT/missing"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    said = " ".join(result.output.split())
    assert len(lines) <= 2 and "neither a local path nor a model on the Hugging Face Hub" in said
    result = CliRunner().invoke(app, ["predict", str(clip), "--checkpoint", REPO, "--json"])
    assert result.exit_code == 0, result.output


def test_pretrained_takes_a_timm_hub_id(tmp_path, monkeypatch):
    """A CNN teacher's --pretrained from a timm repository (model.safetensors, timm's own
    config.json without a transformers model type)."""
    torch.manual_seed(0)
    cnn = build_classifier("mobilenetv3-small", ["a", "b"], target_length=64)
    imagenet = {name: t.clone() for name, t in cnn.backbone.state_dict().items()}
    conv = "conv_stem.weight"
    imagenet[conv] = imagenet[conv].repeat(1, 3, 1, 1) / 3  # as timm stores RGB filters
    safetensors.torch.save_file(imagenet, str(tmp_path / "model.safetensors"))
    files = {"model.safetensors": (tmp_path / "model.safetensors").read_bytes(),
             "config.json": b'{"architecture": "mobilenetv3_small_100", "num_classes": 1000}'}
    repos = {"timm/mobilenetv3_small_100.lamb_in1k": {MAIN: files}}
    with hub_server(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        built = build_classifier("mobilenetv3-small", ["a", "b"], target_length=64,
                                 pretrained="timm/mobilenetv3_small_100.lamb_in1k")
    torch.testing.assert_close(built.backbone.state_dict()[conv], cnn.backbone.state_dict()[conv])
