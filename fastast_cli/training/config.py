"""Training configuration: one flat record, read from a recipe YAML and overridden by flags.

A value may be `auto` for the settings in `AUTO_SETTINGS` (the shipped `folder` recipe does
so): the run picks it from the dataset and the machine when it starts (`training.auto`), and a
flag replaces it. From the command line, `none` unsets an optional path (`--teacher-checkpoint
none`, `--pretrained none`), and `--teacher none` also drops a recipe's teacher checkpoint.
With no recipe, a manifest that names a shipped recipe (`recipe:` in manifest.yaml) picks it.

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

from fastast_cli.data.elastic_features import RESOLUTION_RANGE
from fastast_cli.data.manifest import NORM_SOURCES
from fastast_cli.errors import FastASTError
from fastast_cli.models.ast import SIZES
from fastast_cli.models.elastic import CHOICES as ELASTIC_CHOICES
from fastast_cli.models.reduction import DEFAULT_METHOD, METHODS, check_method
from fastast_cli.models.teachers import BACKBONES, POOLINGS
from fastast_cli.values import load_yaml, number, shown

MODELS = ("ast", *BACKBONES, "passt")
SCHEDULES = ("constant", "decreasing")

# The shipped recipes are package data (fastast_cli/recipes), found the same way from a source
# checkout and from an installed wheel; fastast is installed as files, not zipped.
RECIPES_DIR = Path(str(files("fastast_cli") / "recipes"))

# AST's linear warm-up (Gong et al. 2021, traintest.py): the lr rises from 0 over the first
# 1000 steps. A run from scratch gets it scaled to its length: WARMUP_FRACTION of its steps,
# at most AST's 1000.
AST_WARMUP_STEPS = 1000
# ElasticConfig's choices → the keys naming them here; the values of runs written before them.
ELASTIC_KEYS = {"pooling": "elastic_pooling", "position_fit": "position_fit",
                "token_dropout_mode": "token_dropout_mode"}
LEGACY_ELASTIC = {"elastic_pooling": "cls-dist", "position_fit": "additive",
                  "token_dropout_mode": "bernoulli"}
WARMUP_FRACTION = 0.1

# Settings a recipe may leave to the run (`auto`), picked from the data and the machine.
AUTO_SETTINGS = ("size", "depth", "fstride", "tstride", "loss", "metric", "epochs",
                 "batch_size", "lr", "num_workers")
# Optional paths the command line can unset with `none` (a recipe's value dropped).
UNSETTABLE = ("teacher_checkpoint", "pretrained")
UNSET_WORDS = ("none", "null")


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
    # ElasticAST as published (models.elastic.PUBLISHED); the values of runs before these keys
    # (LEGACY_ELASTIC) remain options.
    elastic_pooling: str = "attention"  # attention (a learned query per clip) or cls-dist
    position_fit: str = "marginal"  # position tables from the grid: marginal or additive
    token_dropout_mode: str = "exact"  # exact int(n·(1 − p)) per clip, or bernoulli
    # Token reduction (AST only), stored in the checkpoint: evaluation uses it too by default.
    method: str = DEFAULT_METHOD  # one of models.reduction.METHODS (tome, pitome, evit, ...)
    r: int = 0
    schedule: str = "constant"
    proportional_attention: bool = False  # off in training, as ToMe trains
    # Knowledge distillation (distill only).
    # auto: the teacher checkpoint's kind (none without a checkpoint); none; or a kind (ast, a
    # CNN name, passt) that must match the checkpoint's.
    teacher: str = "auto"
    teacher_checkpoint: str | None = None
    teacher_logits: str = "online"  # online (consistent teaching) or cached (clean clips)
    # K > 0: the teacher's logits on K augmented views per clip, computed once and replayed
    # (exact consistent teaching at cached cost; overrides teacher_logits).
    teacher_views: int = 0
    kd_lambda: float = 0.1
    temperature: float = 1.0
    # Data.
    data: str | None = None  # manifest.yaml or its folder
    fold: int | None = None  # cross-validation fold (ESC-50, demo); default: the manifest's
    freqm: int = 0
    timem: int = 0
    mixup: float = 0.0
    noise: bool = False
    # Input mean/std: measured on the training clips (per fold), or ast: AST's published
    # constants of the dataset (AudioSet, ESC-50, Speech Commands), one for every fold.
    norm_stats: str = "measured"
    cache: bool = True  # per-clip fbank cache (see `cache_dir`)
    # Where the fbank cache lives: this folder; else $FASTAST_CACHE_DIR/features; else the run
    # folder's cache/ (never the dataset's folder unless named here).
    cache_dir: str | None = None
    num_workers: int = 2
    # Optimisation (AST recipe).
    loss: str = "bce"  # bce or ce
    metric: str = "accuracy"  # accuracy or mAP: picks best.pt
    epochs: int = 25
    batch_size: int = 12  # samples per optimizer step, split across torchrun's processes
    per_process_batch: bool = False  # batch_size per process instead (global = × processes)
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
    # Settings whose recipe value is `auto`: picked when the run starts (training.auto).
    auto: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def from_scratch(self) -> bool:
        """A transformer (AST, PaSST) starting from random weights: it needs a warm-up."""
        return self.model in ("ast", "passt") and self.pretrained is None

    def updated(self, values: dict[str, Any], source: str) -> TrainConfig:
        """A copy with `values` applied (None values are skipped: flags not given), each
        converted to its field's type (YAML reads `1e-4` as a string).

        `auto` (for AUTO_SETTINGS) leaves a setting to the run; a value replaces an `auto`.
        An `auto:` list (a run's saved config.yaml) names settings left to the run whatever
        their values. `none` for an UNSETTABLE path unsets it."""
        merged = self.to_dict()
        auto = list(merged["auto"])
        for key, value in values.items():
            if key not in merged:
                raise FastASTError(f"{source}: unknown setting {key!r}")
            if value is None or key == "auto":
                continue
            if isinstance(value, str) and value.lower() == "auto" and key in AUTO_SETTINGS:
                auto = [*auto, key] if key not in auto else auto
                continue
            auto = [name for name in auto if name != key]
            if key in UNSETTABLE and isinstance(value, str) and value.lower() in UNSET_WORDS:
                merged[key] = None
                continue
            merged[key] = _converted(key, value, merged[key], source)
        if values.get("auto") is not None:  # a saved config.yaml used as a recipe: it wins
            auto += [name for name in _auto_names(values["auto"], source) if name not in auto]
        merged["auto"] = auto
        return TrainConfig(**merged)

    def elastic_choices(self) -> dict[str, str]:
        """The ElasticConfig choices of an elastic run (models.elastic.CHOICES)."""
        return {choice: getattr(self, key) for choice, key in ELASTIC_KEYS.items()}

    def check(self) -> None:
        """Refuse settings that cannot work, with the reason."""
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if self.size not in SIZES:
            problems.append(f"size must be one of {', '.join(SIZES)}, not {self.size!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be mean or attention, not {self.pooling!r}")
        if self.norm_stats not in NORM_SOURCES:
            problems.append(f"norm_stats must be measured or ast, not {self.norm_stats!r}")
        try:
            check_method(self.method)
        except ValueError:  # worded as the other keys
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
        low, high = RESOLUTION_RANGE
        if len(self.resolutions) != 2 or not low <= self.resolutions[0] <= self.resolutions[1] \
                <= high:
            problems.append(f"resolutions must be [low, high] with {low:g} <= low <= high <= "
                            f"{high:g}, got {self.resolutions}")
        if self.resolution_sampling not in ("discrete", "continuous"):
            problems.append("resolution_sampling must be discrete or continuous, not "
                            f"{self.resolution_sampling!r}")
        if not 0.0 <= self.token_dropout < 1.0:
            problems.append(f"token_dropout must lie in [0, 1), got {self.token_dropout}")
        for key, value in self.elastic_choices().items():
            if value not in ELASTIC_CHOICES[key]:
                problems.append(f"{ELASTIC_KEYS[key]} must be one of "
                                f"{', '.join(ELASTIC_CHOICES[key])}, not {value!r}")
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
            "teacher_views": (0, "views per clip"),
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


def process_batch(config: TrainConfig, world: int) -> int:
    """Samples each of `world` processes takes per step. `batch_size` is the global batch (as
    AST's recipes, whose sizes are totals over DataParallel GPUs), split evenly, so a run on 1,
    2 or 8 processes follows the same schedule; with `per_process_batch` it is per process."""
    if config.per_process_batch or world == 1:
        return config.batch_size
    if config.batch_size % world:
        below = config.batch_size // world * world
        options = ", ".join(str(n) for n in (below, below + world) if n > 0)
        raise FastASTError(
            f"batch_size {config.batch_size} (the global batch) does not split across {world} "
            f"processes: give a multiple of {world} ({options}), or --per-process-batch for "
            f"{config.batch_size} samples per process")
    return config.batch_size // world


def _auto_names(value: Any, source: str) -> list[str]:
    """The setting names of an `auto:` list, each one of AUTO_SETTINGS."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or any(name not in AUTO_SETTINGS for name in names):
        raise FastASTError(f"{source}: auto = {value!r} must list settings among "
                           f"{', '.join(AUTO_SETTINGS)}")
    return [str(name) for name in names]


MAX_LIST_VALUES = 8  # the longest list setting (betas, resolutions) holds 2


def _converted(key: str, value: Any, default: Any, source: str) -> Any:
    """`value` as the type of setting `key` (int, float, bool, str or a list of floats);
    numbers must be finite, a bool is not a number, an int is not a bool."""
    kind = FIELD_TYPES[key]
    what = f"{source}: {key}"
    if "bool" in kind:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise FastASTError(f"{what} = {shown(value)} is not a valid {kind}")
    try:
        if kind.startswith("list"):
            if not isinstance(value, list | tuple) or len(value) > MAX_LIST_VALUES:
                raise FastASTError("not a short list")
            return [number(v, what) for v in value]
        if "float" in kind:
            return number(value, what)
        if "int" in kind:
            return number(value, what, integer=True)
        if isinstance(value, dict | list | tuple):
            raise FastASTError("not text")
        return str(value)
    except FastASTError as error:
        reason = str(error).removeprefix(f"{what} ")
        raise FastASTError(f"{what} = {shown(value)} is not a valid {kind} ({reason})") from None


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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FastASTError(f"recipe {path} is not UTF-8 text") from None
    values = load_yaml(text, f"recipe {path}") or {}
    if not isinstance(values, dict):
        raise FastASTError(f"recipe {path} must be a mapping of settings")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise FastASTError(f"recipe {path}: base must be a recipe name, got {shown(base)}")
    return {**read_recipe(base_path(str(base), path), (*_seen, path)), **values}


def base_path(base: str, recipe: Path) -> Path:
    """The file a recipe's `base:` names: beside the recipe first (in its folder or below; a
    path that leaves the folder is refused), then among shipped ones."""
    folder = Path(os.path.realpath(recipe.parent))
    beside = folder / base
    if not Path(os.path.realpath(beside)).is_relative_to(folder):
        raise FastASTError(f"recipe {recipe}: its base {shown(base)} must be a recipe beside it "
                           "(in its folder or below) or a shipped recipe's name")
    shipped = _shipped(base) if "/" not in base and "\\" not in base else ()
    for candidate in (beside, beside.with_name(beside.name + ".yaml"), *shipped):
        if candidate.is_file():
            return candidate
    raise FastASTError(f"recipe {recipe}: its base {base!r} is neither beside it nor a shipped "
                       "recipe")


def load_config(
    recipe: str | os.PathLike[str] | None, overrides: dict[str, Any]
) -> TrainConfig:
    """Defaults ← recipe ← flags; then checked.

    Without a recipe, the one the manifest of `--data` names is used when it ships (e.g.
    `folder` for `prepare folder` data). `--teacher none` without `--teacher-checkpoint`
    drops the recipe's teacher checkpoint."""
    config = TrainConfig()
    if recipe is None:
        recipe = manifest_recipe(overrides.get("data"))
    if recipe is not None:
        config = config.updated(read_recipe(recipe), f"recipe {recipe}")
    config = config.updated(overrides, "command line")
    if overrides.get("teacher") == "none" and overrides.get("teacher_checkpoint") is None:
        config = config.updated({"teacher_checkpoint": "none"}, "command line")
    config.check()
    return config


def manifest_recipe(data: str | os.PathLike[str] | None) -> Path | None:
    """The shipped recipe file a prepared dataset's manifest names (`recipe:`), None when there
    is no readable manifest or it names none that ships (commands report a bad --data later)."""
    if data is None:
        return None
    path = Path(data).expanduser()
    path = path / "manifest.yaml" if path.is_dir() else path
    try:
        name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("recipe")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        return None
    shipped = RECIPES_DIR / f"{name}.yaml"
    return shipped if shipped.is_file() else None

