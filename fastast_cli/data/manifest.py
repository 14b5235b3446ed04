"""`manifest.yaml`: the one handle on a prepared dataset that every later command takes.

It sits at the root of a prepared dataset folder; all its paths are relative to that folder.

    format: 1
    dataset: esc50                    # esc50 | speechcommands | audioset | folder | demo
    recipe: esc50                     # name of the training recipe that fits this data
    sample_rate: 16000
    num_mel_bins: 128
    target_length: 512                # fbank frames fed to the model
    num_classes: 50
    labels_csv: class_labels_indices.csv
    mean: -6.63                       # raw-fbank mean/std measured on the training data
    std: 5.36
    norm_measured_on: train           # which clips the top-level mean/std come from
    splits:                           # split name → AST JSON datafile
      train: datafiles/train.json
    folds:                            # cross-validation datasets (ESC-50, demo) only
      1: {train: datafiles/fold1_train.json, eval: datafiles/fold1_eval.json, mean: .., std: ..}
    default_fold: 1
    counts: {train: 1600, fold1_train: 1600, fold1_eval: 400}
    extras: {background_noise: datafiles/background_noise.json}
    fastast_version: 0.1.0
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fastast_cli.atomic import write_text
from fastast_cli.data.datafile import read_datafile, read_labels_csv
from fastast_cli.data.features import AST_NORM_STATS, MAX_TARGET_LENGTH, SAMPLE_RATE
from fastast_cli.errors import FastASTError
from fastast_cli.values import load_yaml, number, shown

if TYPE_CHECKING:
    from fastast_cli.data.dataset import ASTDataset

MANIFEST_NAME = "manifest.yaml"
# Where a run's input mean/std come from: `measured` on the manifest's training clips (per fold
# for cross-validation data), or `ast`: the constants AST published for its dataset and used for
# every fold (AST_NORM_STATS; AudioSet, ESC-50 and Speech Commands only).
NORM_SOURCES = ("measured", "ast")
MANIFEST_HEADER = "# fastast prepared dataset: pass this file (or its folder) as --data.\n"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: its train/eval datafiles and train-split fbank stats."""

    train: Path
    eval: Path
    mean: float
    std: float


@dataclass
class Manifest:
    """A prepared dataset. Paths are absolute once loaded."""

    path: Path
    dataset: str
    sample_rate: int
    num_mel_bins: int
    target_length: int
    labels_csv: Path
    mean: float
    std: float
    splits: dict[str, Path] = field(default_factory=dict)
    folds: dict[int, Fold] = field(default_factory=dict)
    default_fold: int | None = None
    recipe: str | None = None
    norm_measured_on: str = "train"
    counts: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    label_mids: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The prepared dataset folder (where manifest.yaml lives)."""
        return self.path.parent

    @property
    def num_classes(self) -> int:
        """Number of classes in the labels CSV."""
        return len(self.label_names)

    @property
    def cache_dir(self) -> Path:
        """Suggested fbank cache folder for this dataset (`<root>/cache`)."""
        return self.root / "cache"

    @property
    def split_names(self) -> list[str]:
        """Names accepted by `datafile()` (fold datasets: `train` and `eval`)."""
        return sorted(set(self.splits) | ({"train", "eval"} if self.folds else set()))

    @property
    def eval_split(self) -> str:
        """The split results are reported on: the held-out `test` (or `eval`) split when the
        dataset has one, as AST reports; `valid` only when it is all there is."""
        return self._first_split(("eval", "test", "valid"))

    @property
    def selection_split(self) -> str:
        """The split training picks `best.pt` on: `valid` when there is one, so the reported
        split never chooses the model."""
        return self._first_split(("valid", "eval", "test"))

    def _first_split(self, preference: tuple[str, ...]) -> str:
        """The first split of `preference` the dataset has with clips in it."""
        for name in preference:
            if name in self.split_names and self.counts.get(name) != 0:
                return name
        raise FastASTError(f"{self.path}: no evaluation split (eval, valid or test)")

    def resolved_fold(self, fold: int | None) -> int | None:
        """The fold a run on `fold` uses: the number given, the default one, or None without
        folds."""
        return (self.default_fold if fold is None else fold) if self.folds else None

    @cached_property
    def identity(self) -> str:
        """A fingerprint of the dataset's partition: its labels and which clips (by path below
        the dataset folder) sit in every split and fold. Two preparations of the same data agree;
        checkpoints record it so that a teacher's fold numbers are known to mean the same clips.
        """
        def clips(datafile: Path) -> list[str]:
            return sorted(_relative_name(entry.wav, self.root)
                          for entry in read_datafile(datafile))

        parts: dict[str, Any] = {"dataset": self.dataset, "labels": self.label_mids,
                                 "splits": {name: clips(path) for name, path in
                                            sorted(self.splits.items())},
                                 "folds": {str(number): [clips(f.train), clips(f.eval)]
                                           for number, f in sorted(self.folds.items())}}
        encoded = json.dumps(parts, sort_keys=True).encode()
        return f"{self.dataset}:{hashlib.sha256(encoded).hexdigest()[:16]}"

    def _fold(self, fold: int | None) -> Fold:
        """The requested fold, or the default one."""
        number = self.default_fold if fold is None else fold
        if number not in self.folds:
            raise FastASTError(
                f"{self.path}: fold {number} does not exist (folds: {sorted(self.folds)})"
            )
        return self.folds[number]

    def datafile(self, split: str, fold: int | None = None) -> Path:
        """The datafile of `split`; in fold datasets `train`/`eval` of `fold` (default fold)."""
        if self.folds and (fold is not None or split not in self.splits):
            if split not in ("train", "eval"):
                raise FastASTError(
                    f"{self.path}: fold datasets have splits train and eval, not {split!r}"
                )
            return getattr(self._fold(fold), split)
        if fold is not None:
            raise FastASTError(f"{self.path}: dataset {self.dataset!r} has no folds")
        if split not in self.splits:
            raise FastASTError(
                f"{self.path}: no split {split!r} (available: {', '.join(self.split_names)})"
            )
        return self.splits[split]

    def norm_stats(self, fold: int | None = None,
                   source: str = "measured") -> tuple[float, float]:
        """(mean, std) to normalize with. `measured`: the fold's own when there are folds, else
        global; `ast`: AST's published constants of this dataset, the same for every fold."""
        if source == "ast":
            if self.dataset not in AST_NORM_STATS:
                raise FastASTError(
                    f"norm_stats ast: AST published input statistics for "
                    f"{', '.join(AST_NORM_STATS)} only, not for this {self.dataset!r} dataset "
                    f"({self.path}); use norm_stats measured"
                )
            return AST_NORM_STATS[self.dataset]
        if source != "measured":
            raise FastASTError(f"norm_stats must be {' or '.join(NORM_SOURCES)}, not {source!r}")
        if self.folds and (fold is not None or self.default_fold is not None):
            chosen = self._fold(fold)
            return chosen.mean, chosen.std
        return self.mean, self.std

    def extra_path(self, key: str) -> Path | None:
        """An extra file named in the manifest (e.g. `background_noise`), resolved; or None."""
        value = self.extras.get(key)
        return (self.root / value).resolve() if isinstance(value, str) else None

    def dataset_for(self, split: str, fold: int | None = None,
                    stats: tuple[float, float] | None = None, **options: Any) -> ASTDataset:
        """An `ASTDataset` of `split` with this manifest's features, normalized with `stats`
        (mean, std; default: the measured `norm_stats(fold)`); `options` go to it."""
        from fastast_cli.data.dataset import ASTDataset

        mean, std = stats or self.norm_stats(fold)
        return ASTDataset(
            self.datafile(split, fold),
            self.labels_csv,
            target_length=self.target_length,
            mean=mean,
            std=std,
            num_mel_bins=self.num_mel_bins,
            **options,
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping, paths relative to the manifest's folder."""
        from fastast_cli import __version__

        def rel(path: Path) -> str:
            return os.path.relpath(path, self.root) if path.is_absolute() else str(path)

        data: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "recipe": self.recipe,
            "sample_rate": self.sample_rate,
            "num_mel_bins": self.num_mel_bins,
            "target_length": self.target_length,
            "num_classes": self.num_classes,
            "labels_csv": rel(self.labels_csv),
            "mean": float(self.mean),
            "std": float(self.std),
            "norm_measured_on": self.norm_measured_on,
            "splits": {name: rel(path) for name, path in self.splits.items()},
        }
        if self.folds:
            data["folds"] = {
                number: {
                    "train": rel(f.train),
                    "eval": rel(f.eval),
                    "mean": float(f.mean),
                    "std": float(f.std),
                }
                for number, f in sorted(self.folds.items())
            }
            data["default_fold"] = self.default_fold
        data["counts"] = dict(self.counts)
        data["extras"] = {k: rel(v) if isinstance(v, Path) else v for k, v in self.extras.items()}
        data["fastast_version"] = __version__
        return data


def _relative_name(path: Path, root: Path) -> str:
    """`path` below `root` in POSIX form, else its full path."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def manifest_path(path_or_dir: str | os.PathLike[str]) -> Path:
    """`DIR/manifest.yaml` for a folder, the path itself for a file."""
    path = Path(path_or_dir).expanduser()
    return path / MANIFEST_NAME if path.is_dir() else path


def write_manifest(manifest: Manifest) -> Path:
    """Write `manifest.path` atomically; returns the path."""
    body = yaml.safe_dump(manifest.to_dict(), sort_keys=False, default_flow_style=False)
    write_text(manifest.path, MANIFEST_HEADER + body)
    return manifest.path


def _require(data: dict[str, Any], key: str, path: Path) -> Any:
    """data[key], or a clear error naming the manifest and the key."""
    if key not in data:
        raise FastASTError(f"{path}: manifest is missing {key!r}")
    return data[key]


def load_manifest(path_or_dir: str | os.PathLike[str]) -> Manifest:
    """Read `manifest.yaml` (or `DIR/manifest.yaml`) written by `fastast prepare`."""
    path = manifest_path(path_or_dir)
    try:
        return _read_manifest(path)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FastASTError(
            f"{path} is damaged ({type(error).__name__}: {error}); run `fastast prepare` again"
        ) from None


def _read_manifest(path: Path) -> Manifest:
    """The manifest at `path`; malformed values raise KeyError/TypeError/ValueError."""
    if not path.exists():
        raise FastASTError(
            f"no manifest at {path}: pass a folder made by `fastast prepare` or its manifest.yaml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FastASTError(f"{path}: not a fastast manifest (not UTF-8 text)") from None
    data = load_yaml(text, str(path))
    if not isinstance(data, dict):
        raise FastASTError(f"{path}: not a fastast manifest")
    if number(data.get("format", FORMAT_VERSION), f"{path}: format", integer=True) > \
            FORMAT_VERSION:
        raise FastASTError(f"{path}: manifest format {data['format']} is newer than this fastast")
    root = path.parent.resolve()

    def at(value: str) -> Path:
        return (root / value).resolve()

    def checked(key: str, value: Any, **limits: Any) -> Any:
        return number(value, f"{path}: {key}", **limits)

    folds = {
        checked("fold number", key, low=1, integer=True): Fold(
            at(f["train"]), at(f["eval"]), *_norm_stats(f["mean"], f["std"], f"{path}: fold {key}"))
        for key, f in (data.get("folds") or {}).items()
    }
    labels = read_labels_csv(at(_require(data, "labels_csv", path)))
    if "num_classes" in data and checked("num_classes", data["num_classes"], integer=True) != \
            len(labels):
        raise FastASTError(f"{path}: num_classes is {shown(data['num_classes'])} but its labels "
                           f"CSV lists {len(labels)} classes")
    default_fold = data.get("default_fold")
    if default_fold is not None and checked("default_fold", default_fold, integer=True) not in \
            folds:
        raise FastASTError(f"{path}: default_fold {shown(default_fold)} is not one of its folds "
                           f"({sorted(folds)})")
    if checked("sample_rate", _require(data, "sample_rate", path), integer=True) != SAMPLE_RATE:
        raise FastASTError(f"{path}: sample_rate is {shown(data['sample_rate'])}, but prepared "
                           f"audio is at {SAMPLE_RATE} Hz (features are computed at that rate)")
    extras = dict(data.get("extras") or {})
    return Manifest(
        path=path.resolve(),
        dataset=str(_require(data, "dataset", path)),
        sample_rate=SAMPLE_RATE,
        num_mel_bins=checked("num_mel_bins", data.get("num_mel_bins", 128), low=16,
                             high=MAX_MEL_BINS, integer=True),
        target_length=checked("target_length", _require(data, "target_length", path), low=1,
                              high=MAX_TARGET_LENGTH, integer=True),
        labels_csv=at(data["labels_csv"]),
        mean=(stats := _norm_stats(_require(data, "mean", path), _require(data, "std", path),
                                   str(path)))[0],
        std=stats[1],
        splits={name: at(p) for name, p in (data.get("splits") or {}).items()},
        folds=folds,
        default_fold=None if default_fold is None else int(default_fold),
        recipe=data.get("recipe"),
        norm_measured_on=str(data.get("norm_measured_on", "train")),
        counts={str(k): checked(f"counts.{k}", v, low=0, integer=True)
                for k, v in (data.get("counts") or {}).items()},
        extras=extras,
        label_mids=list(labels.mids),
        label_names=list(labels.names),
    )


MAX_MEL_BINS = 1024  # AST uses 128 (16 = one patch is the fewest a model reads)


def _norm_stats(mean: Any, std: Any, where: str) -> tuple[float, float]:
    """A fbank (mean, std) read from a file: finite, std > 0 (features are divided by it)."""
    return (number(mean, f"{where}: mean", low=-1e4, high=1e4),
            number(std, f"{where}: std", above=0.0, high=1e4))
