"""Training configuration: one flat record, read from a recipe YAML and overridden by flags.

A recipe may name another recipe under `base:` (a path relative to it, `.yaml` optional, or a
shipped recipe's name, so a copied shipped recipe still finds its base); its values are read
first and the recipe's own values override them.
Unknown keys are an error, so a typo in a recipe never passes silently. The effective
configuration is saved with every run.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from fastast_cli.errors import FastASTError
from fastast_cli.models.ast import SIZES
from fastast_cli.models.reduction import METHODS
from fastast_cli.models.teachers import BACKBONES, POOLINGS

MODELS = ("ast", *BACKBONES, "passt")
SCHEDULES = ("constant", "decreasing")

# The shipped recipes are package data (fastast_cli/recipes), found the same way from a source
# checkout and from an installed wheel; fastast is installed as files, not zipped.
RECIPES_DIR = Path(str(files("fastast_cli") / "recipes"))

# AST's linear warm-up (Gong et al. 2021, traintest.py): the lr rises from 0 over the first
# 1000 steps. A run from scratch gets it scaled to its length: WARMUP_FRACTION of its steps,
# at most AST's 1000.
AST_WARMUP_STEPS = 1000
WARMUP_FRACTION = 0.1


@dataclass
class TrainConfig:
    """Everything a training run needs; field names are the recipe keys and the CLI flags."""

    # What is trained.
    model: str = "ast"  # ast, or a CNN: efficientnet-b0, efficientnet-b2, mobilenetv3-small
    size: str = "base"  # AST size: tiny, small, base
    depth: int = 12  # AST blocks (12 in every published AST; fewer for quick CPU runs)
    pretrained: str | None = None  # initial weights: AST/HF/DeiT checkpoint or timm CNN weights
    fstride: int = 10
    tstride: int = 10
    pooling: str = "mean"  # CNN pooling: mean or attention
    # ElasticAST: native-length clips packed into rows, any time resolution.
    elastic: bool = False
    max_tokens: int = 2048  # tokens per packed row
    resolutions: list[float] = field(default_factory=lambda: [1.0, 4.0])  # training q range
    resolution_sampling: str = "discrete"  # q in {low, low + 1, ..., high}, or continuous
    token_dropout: float = 0.1  # ElasticAST: share of patch tokens dropped in training
    # Token reduction (AST only), stored in the checkpoint: evaluation uses it too by default.
    method: str = "tome"  # one of models.reduction.METHODS: tome, pitome, evit, tofu, random
    r: int = 0
    schedule: str = "constant"
    proportional_attention: bool = False  # off in training, as ToMe trains
    # Knowledge distillation (distill only).
    # auto: the teacher checkpoint's kind (none without a checkpoint); none; or a kind (ast, a
    # CNN name, passt) that must match the checkpoint's.
    teacher: str = "auto"
    teacher_checkpoint: str | None = None
    teacher_logits: str = "online"  # online (consistent teaching) or cached
    kd_lambda: float = 0.1
    temperature: float = 1.0
    # Data.
    data: str | None = None  # manifest.yaml or its folder
    fold: int | None = None  # cross-validation fold (ESC-50, demo); default: the manifest's
    freqm: int = 0
    timem: int = 0
    mixup: float = 0.0
    noise: bool = False
    cache: bool = True  # per-clip fbank cache (see `cache_dir`)
    # Where the fbank cache lives: this folder; else $FASTAST_CACHE_DIR/features; else the run
    # folder's cache/ (never the dataset's folder unless named here).
    cache_dir: str | None = None
    num_workers: int = 2
    # Optimisation (AST recipe).
    loss: str = "bce"  # bce or ce
    metric: str = "accuracy"  # accuracy or mAP: picks best.pt
    epochs: int = 25
    batch_size: int = 12
    lr: float = 1e-4
    weight_decay: float = 5e-7
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    # lr scaled by step/warmup_steps over the first steps; None: AST's warm-up scaled to the
    # run for a transformer trained from scratch, none otherwise (see `warmup_steps_for`).
    warmup_steps: int | None = None
    lr_start: int = 5  # MultiStepLR: decay by lr_decay at epochs lr_start, +lr_step, ...
    lr_step: int = 1
    lr_decay: float = 0.85
    average_from: int | None = None  # checkpoint weight averaging over epochs [from, to]
    average_to: int | None = None
    amp: bool = True  # mixed precision on CUDA
    compile: bool = False  # training steps through torch.compile (evaluation stays eager)
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # run folder

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def from_scratch(self) -> bool:
        """A transformer (AST, PaSST) starting from random weights: it needs a warm-up."""
        return self.model in ("ast", "passt") and self.pretrained is None

    def updated(self, values: dict[str, Any], source: str) -> TrainConfig:
        """A copy with `values` applied (None values are skipped: flags not given), each
        converted to its field's type (YAML reads `1e-4` as a string)."""
        merged = self.to_dict()
        for key, value in values.items():
            if key not in merged:
                raise FastASTError(f"{source}: unknown setting {key!r}")
            if value is not None:
                merged[key] = _converted(key, value, merged[key], source)
        return TrainConfig(**merged)

    def check(self) -> None:
        """Refuse settings that cannot work, with the reason."""
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if self.size not in SIZES:
            problems.append(f"size must be one of {', '.join(SIZES)}, not {self.size!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be mean or attention, not {self.pooling!r}")
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be constant or decreasing, not {self.schedule!r}")
        if self.lr_step < 1 or self.depth < 1 or self.fstride < 1 or self.tstride < 1:
            problems.append("lr_step, depth, fstride and tstride must be >= 1")
        if self.data is None:
            problems.append("no data: give --data (a manifest.yaml from `fastast prepare`)")
        if self.out is None:
            problems.append("no run folder: give --out")
        if self.loss not in ("bce", "ce"):
            problems.append(f"loss must be bce or ce, not {self.loss!r}")
        if self.metric not in ("accuracy", "mAP"):
            problems.append(f"metric must be accuracy or mAP, not {self.metric!r}")
        if self.teacher_logits not in ("online", "cached"):
            problems.append(f"teacher_logits must be online or cached, not {self.teacher_logits!r}")
        if not 0.0 <= self.kd_lambda <= 1.0:
            problems.append(f"kd_lambda must lie in [0, 1], got {self.kd_lambda}")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            problems.append("epochs and batch_size must be >= 1 and lr > 0")
        if (self.average_from is None) != (self.average_to is None):
            problems.append("weight averaging needs both average_from and average_to")
        if self.elastic and self.model != "ast":
            problems.append("elastic training is for an AST student (--model ast)")
        if len(self.resolutions) != 2 or not 0 < self.resolutions[0] <= self.resolutions[1]:
            problems.append(f"resolutions must be [low, high] with 0 < low <= high, "
                            f"got {self.resolutions}")
        if self.resolution_sampling not in ("discrete", "continuous"):
            problems.append("resolution_sampling must be discrete or continuous, not "
                            f"{self.resolution_sampling!r}")
        if not 0.0 <= self.token_dropout < 1.0:
            problems.append(f"token_dropout must lie in [0, 1), got {self.token_dropout}")
        if self.teacher not in ("auto", "none", *MODELS):
            problems.append(f"teacher must be auto, none or one of {', '.join(MODELS)}, "
                            f"not {self.teacher!r}")
        elif self.teacher not in ("auto", "none") and self.teacher_checkpoint is None:
            problems.append(f"teacher {self.teacher!r} needs --teacher-checkpoint")
        if self.teacher == "none" and self.teacher_checkpoint is not None:
            problems.append(f"teacher none, but a teacher checkpoint is given "
                            f"({self.teacher_checkpoint}): drop one of them (without a teacher "
                            "kind, the checkpoint's own is used)")
        problems += self._range_problems()
        if problems:
            raise FastASTError("; ".join(problems))

    def _range_problems(self) -> list[str]:
        """Numbers outside the range where they mean something."""
        limits = {  # setting: (lowest allowed, why)
            "r": (0, "tokens merged per block"), "freqm": (0, "a mask width"),
            "timem": (0, "a mask width"), "num_workers": (0, "a process count"),
            "warmup_steps": (0, "a step count"), "lr_start": (0, "an epoch"),
            "weight_decay": (0, "a weight"), "max_tokens": (16, "tokens per packed row"),
            "fold": (1, "a fold number"), "average_from": (1, "an epoch"),
        }
        problems = [
            f"{key} must be >= {lowest} ({why}), got {getattr(self, key)}"
            for key, (lowest, why) in limits.items()
            if getattr(self, key) is not None and getattr(self, key) < lowest
        ]
        if not 0.0 <= self.mixup <= 1.0:
            problems.append(f"mixup is a probability in [0, 1], got {self.mixup}")
        if self.lr_decay <= 0:
            problems.append(f"lr_decay must be > 0, got {self.lr_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"betas must be two values in [0, 1), got {self.betas}")
        if self.average_from is not None and self.average_to is not None and (
            self.average_to < self.average_from
        ):
            problems.append("average_to must be >= average_from")
        return problems


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def warmup_steps_for(config: TrainConfig, steps_per_epoch: int) -> int:
    """Warm-up steps of a run of `config.epochs` × `steps_per_epoch` optimizer steps: the
    configured number when set, else AST's warm-up scaled to the run for a transformer trained
    from scratch (WARMUP_FRACTION of the steps, at most AST_WARMUP_STEPS), else none."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    if not config.from_scratch:
        return 0
    total = config.epochs * steps_per_epoch
    return max(1, min(AST_WARMUP_STEPS, round(WARMUP_FRACTION * total)))


def _converted(key: str, value: Any, default: Any, source: str) -> Any:
    """`value` as the type of setting `key` (int, float, bool, str or a list of floats)."""
    kind = FIELD_TYPES[key]
    try:
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if kind.startswith("list"):
            return [float(v) for v in value]
        if "float" in kind:
            return float(value)
        if "int" in kind:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        raise FastASTError(f"{source}: {key} = {value!r} is not a valid {kind}") from None


def _shipped(name: str) -> tuple[Path, Path]:
    """Where a shipped recipe called `name` (`demo` or `demo.yaml`) would be."""
    return RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"


def recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A recipe file: a path, or the name of a recipe shipped in `recipes/` (e.g. `demo`)."""
    path = Path(name_or_path).expanduser()
    for candidate in (path, path.with_suffix(".yaml"), *_shipped(str(name_or_path))):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise FastASTError(f"no recipe {str(name_or_path)!r} (a YAML path, or one of: {shipped})")


def read_recipe(name_or_path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> dict:
    """The recipe's values, its `base:` chain resolved (the recipe itself wins)."""
    path = recipe_path(name_or_path).resolve()
    if path in _seen:
        raise FastASTError(f"recipe {path} includes itself through 'base:'")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise FastASTError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise FastASTError(f"recipe {path} must be a mapping of settings")
    base = values.pop("base", None)
    if base is None:
        return values
    return {**read_recipe(base_path(str(base), path), (*_seen, path)), **values}


def base_path(base: str, recipe: Path) -> Path:
    """The file a recipe's `base:` names: beside the recipe first, then among shipped ones."""
    beside = recipe.parent / Path(base).expanduser()
    for candidate in (beside, beside.with_name(beside.name + ".yaml"), *_shipped(base)):
        if candidate.is_file():
            return candidate
    raise FastASTError(f"recipe {recipe}: its base {base!r} is neither beside it nor a shipped "
                       "recipe")


def load_config(
    recipe: str | os.PathLike[str] | None, overrides: dict[str, Any]
) -> TrainConfig:
    """Defaults ← recipe ← flags; then checked."""
    config = TrainConfig()
    if recipe is not None:
        config = config.updated(read_recipe(recipe), f"recipe {recipe}")
    config = config.updated(overrides, "command line")
    config.check()
    return config

