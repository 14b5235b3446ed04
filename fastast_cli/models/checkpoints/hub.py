"""Checkpoints named by a Hugging Face Hub id, downloaded through `huggingface_hub`.

    MIT/ast-finetuned-audioset-10-10-0.4593         a transformers AST repository
    MIT/ast-finetuned-audioset-10-10-0.4593@<rev>   a branch, tag or commit
    timm/efficientnet_b2.ra_in1k                    timm weights (--pretrained of a CNN)
    hf://OWNER/NAME[@rev]                           explicit; also for a name like a file

A name that exists as a local path is always the local file or folder. Otherwise a name of
the form OWNER/NAME (no file extension such as `.pt`) is looked up on the Hub: `config.json`
and the weights (`model.safetensors`, else `pytorch_model.bin`, else a sharded index and its
shards; `preprocessor_config.json` when present) go into huggingface_hub's cache, so the second
use reads the cache. The environment as huggingface_hub's users know it applies, read when a
checkpoint is opened: `HF_ENDPOINT` (a mirror), `HF_HUB_CACHE` / `HF_HOME` (where the cache
is), `HF_HUB_OFFLINE=1` (the cache only, no network) and `HF_TOKEN` (private repositories).
Every failure (no such repository, revision or file, no network, a dropped connection) is one
`CheckpointError` line naming the id.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastast_cli.errors import CheckpointError

# Hub names: OWNER/NAME, letters, digits, `-`, `_`, `.`; `@REV` a branch, tag or commit.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})"
                    r"(?:@(?P<revision>[\w.-]+(?:/[\w.-]+)*))?$")
EXPLICIT = re.compile(r"^hf:/+")  # `hf://`, also after Path() folds the slashes
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".yaml", ".yml", ".json",
                 ".onnx", ".wav", ".flac")
CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
OPTIONAL_FILES = ("preprocessor_config.json",)
AST_MODEL_TYPE = "audio-spectrogram-transformer"
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HubId:
    """A Hub repository and revision (None: the default branch)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def hub_id(text: str) -> HubId | None:
    """The Hub id `text` names (explicitly with `hf://`, or as OWNER/NAME without a file
    extension), None when it names none."""
    explicit = EXPLICIT.match(text)
    name = text[explicit.end():] if explicit else text
    match = HUB_ID.match(name)
    if match is None:
        if explicit:
            raise CheckpointError(f"{text}: not a Hugging Face Hub id (hf://OWNER/NAME[@REV])")
        return None
    if not explicit and match["repo"].lower().endswith(FILE_SUFFIXES):
        return None
    if ".." in match["repo"] or (match["revision"] and ".." in match["revision"]):
        return None
    return HubId(match["repo"], match["revision"])


def _environment() -> dict[str, object]:
    """huggingface_hub's settings from the environment as it is now (its own constants are
    read once, when it is imported)."""
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]).expanduser() / "hub") if os.environ.get("HF_HOME")
        else None)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return {"endpoint": os.environ.get("HF_ENDPOINT") or None, "cache_dir": cache,
            "local_files_only": offline}


def download(hub: HubId) -> Path:
    """The cached snapshot folder of `hub` with its config and weights (see the module
    docstring); a CheckpointError line when it cannot be had."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{hub} looks like a Hugging Face Hub id, but huggingface_hub is "
                              "not installed: pip install huggingface_hub") from None
    config = _fetch(hub, CONFIG, required=False)
    for name in WEIGHT_FILES:
        weights = _fetch(hub, name, required=False)
        if weights is not None:
            break
    else:
        weights = _sharded(hub)
    for name in OPTIONAL_FILES:
        _fetch(hub, name, required=False)
    return (config or weights).parent


def hub_checkpoint(hub: HubId) -> Path:
    """What to read for `hub`: the snapshot folder when it is a transformers AST (config.json
    with its model type), else its weights file (timm, DeiT, fastast files)."""
    folder = download(hub)
    if _is_transformers_ast(folder / CONFIG):
        return folder
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{hub}: a sharded repository that is not a transformers AST; "
                          "download it and pass the weights file")


def _is_transformers_ast(config: Path) -> bool:
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(values, dict) and values.get("model_type") == AST_MODEL_TYPE


def _cached(hub: HubId, filename: str, cache_dir: object) -> Path | None:
    """HF_HUB_OFFLINE: the cached file; None when the cache knows the repository has no such
    file; a CheckpointError when the cache does not hold it."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo, filename, cache_dir=cache_dir,
                                   revision=hub.revision)
    if isinstance(found, str):
        return Path(found)
    if found is not None or filename in OPTIONAL_FILES:  # recorded as missing on the Hub
        return None
    raise CheckpointError(f"no such checkpoint: {hub} is not a local path, and its {filename} "
                          "is not in the Hugging Face cache (HF_HUB_OFFLINE is set: download "
                          "it once online)")


def _sharded(hub: HubId) -> Path:
    """The shards of a sharded repository (and its index), downloaded; returns the index."""
    for name in INDEX_FILES:
        index = _fetch(hub, name, required=False)
        if index is None:
            continue
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{hub}: {name} has no readable weight_map") from None
        for shard in sorted(shards):
            if not isinstance(shard, str) or "/" in shard or shard.startswith("."):
                raise CheckpointError(f"{hub}: {name} names an unsafe shard {shard!r}")
            _fetch(hub, shard, required=True)
        return index
    files = ", ".join((*WEIGHT_FILES, *INDEX_FILES))
    raise CheckpointError(f"{hub} on the Hugging Face Hub has none of {files}")


def _fetch(hub: HubId, filename: str, required: bool) -> Path | None:
    """One file of the repository through the cache; None when it has no such file (unless
    `required`)."""
    from huggingface_hub import hf_hub_download

    settings = _environment()
    if settings["local_files_only"]:
        return _cached(hub, filename, settings["cache_dir"])
    with _quiet_hub(), _one_line(hub, filename, required, settings):
        if filename == CONFIG:
            _probe(hub, settings)
        return Path(hf_hub_download(hub.repo, filename, revision=hub.revision, **settings))
    return None  # the file is not in the repository (`_one_line` said so)


def _probe(hub: HubId, settings: dict[str, object]) -> None:
    """One HEAD request without retries before the first download of an uncached repository,
    so that an unreachable Hub is one quick line (huggingface_hub retries for half a minute)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    if try_to_load_from_cache(hub.repo, CONFIG, cache_dir=settings["cache_dir"],
                              revision=hub.revision) is not None:
        return
    url = hf_hub_url(hub.repo, CONFIG, revision=hub.revision, endpoint=settings["endpoint"])
    try:
        get_hf_file_metadata(url, timeout=PROBE_TIMEOUT_S)
    except EntryNotFoundError:
        return
    except HfHubHTTPError:
        raise
    except Exception as error:  # no route, no name, refused, timed out
        raise _Unreachable(str(error)) from None


class _Unreachable(Exception):
    """The Hub could not be reached at all."""


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's retry warnings off while fastast says what failed in one line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _one_line(hub: HubId, filename: str, required: bool,
              settings: dict[str, object]) -> Iterator[None]:
    """Every failure of a download as one CheckpointError; a file the repository lacks is
    swallowed unless `required` (the caller then returns None)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_name = f"the Hugging Face Hub at {settings['endpoint'] or 'huggingface.co'}"
    try:
        yield
    except (_Unreachable, LocalEntryNotFoundError):  # LocalEntry… is an EntryNotFound: first
        raise CheckpointError(
            f"no such checkpoint: {hub} is not a local path, and {hub_name} cannot be reached "
            f"to download its {filename} (not in the cache; HF_ENDPOINT names a mirror)"
        ) from None
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"{hub}: the Hub repository has no {filename}") from None
    except GatedRepoError:
        raise CheckpointError(f"{hub}: a gated repository: accept its terms on the Hub and set "
                              "HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"no such checkpoint: {hub} is neither a local path nor a model on {hub_name} "
            "(private ones need HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{hub}: the Hub repository has no revision "
                              f"{hub.revision!r}") from None
    except Exception as error:  # the network and the server: one line, whatever failed
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{hub}: downloading {filename} failed ({type(error).__name__}"
                              f"{': ' + reason if reason else ''})") from None
