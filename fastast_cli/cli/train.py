"""`fastast train-teacher` and `fastast distill`: training from labels and with CMKD + ToMe."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from fastast_cli.cli._app import (
    DEFAULT_NOTES,
    MaxDuration,
    Quiet,
    app,
    apply_max_duration,
    console,
    user_errors,
)
from fastast_cli.cli._merging import method_name
from fastast_cli.cli.options import parse_resolution_range
from fastast_cli.models.reduction import DEFAULT_METHOD, METHODS
from fastast_cli.progress import Task, set_progress
from fastast_cli.reports.tables import Column, rich_table
from fastast_cli.training.config import TrainConfig, load_config, manifest_recipe
from fastast_cli.training.loop import RunResult, train
from fastast_cli.training.tensorboard import FOLDER as TENSORBOARD_FOLDER
from fastast_cli.training.tensorboard import TensorBoardReporter

Recipe = Annotated[Path | None, typer.Option(
    help="Recipe YAML (a path, or a shipped name: folder, demo, esc50, speechcommands, "
    "audioset, ...); flags override its values. Default: the recipe the manifest of --data "
    "names (folder for `prepare folder` data: settings picked from the data and machine).")]
Data = Annotated[Path | None, typer.Option(
    help="Prepared dataset: manifest.yaml or its folder (from `fastast prepare`).")]
Out = Annotated[Path | None, typer.Option(
    help="Run folder: best.pt, last.pt, log.csv, log.jsonl and the effective config.yaml. A "
    "folder that already holds a run is refused unless you pass --resume or --overwrite.")]
CacheDir = Annotated[Path | None, typer.Option(
    help="Folder of the per-clip fbank cache (recipe key cache_dir; `cache: false` turns the "
    "cache off). Default: $FASTAST_CACHE_DIR/features when set (shared by runs), else cache/ "
    "inside --out. Never the dataset's folder unless you name it here.")]
Epochs = Annotated[int | None, typer.Option(min=1, help="Training epochs.")]
BatchSize = Annotated[int | None, typer.Option(min=1, help=(
    "Samples per optimizer step, in all: under torchrun split evenly across the processes "
    "(the recipes' sizes are AST's totals), so any process count follows one schedule."))]
PerProcessBatch = Annotated[bool | None, typer.Option(
    "--per-process-batch/--global-batch", help="--batch-size counts per process (the global "
    "batch is then that × the processes); default: global.", show_default=False)]
Lr = Annotated[float | None, typer.Option(help="Peak learning rate (Adam).")]
WarmupSteps = Annotated[int | None, typer.Option(
    min=0, help="Steps of linear lr warm-up (0: none). Default: the recipe's, else AST's "
    "warm-up scaled to the run (10% of its steps, at most 1000) for an AST trained from "
    "scratch, none with --pretrained.")]
Seed = Annotated[int | None, typer.Option(help="Seed of initialisation, order and augmentation.")]
Device = Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N.")]
Fold = Annotated[int | None, typer.Option(help="Cross-validation fold (ESC-50, demo).")]
NormStats = Annotated[str | None, typer.Option(
    help="Input mean/std: measured on the training clips (per fold; the default), or ast: "
    "AST's constants of AudioSet, ESC-50 or Speech Commands, one for every fold (their "
    "shipped recipes use them). Stored in the checkpoint.",
    show_default=False)]
Workers = Annotated[int | None, typer.Option(min=0, help="Data-loader worker processes.")]
Pretrained = Annotated[str | None, typer.Option(
    help="Initial weights: AST (AudioSet .pth, Hugging Face folder, DeiT) or timm ImageNet "
    "CNN; a Hugging Face Hub id works too (MIT/ast-finetuned-audioset-10-10-0.4593, "
    "timm/efficientnet_b2.ra_in1k, OWNER/NAME@REVISION). none drops the recipe's.")]
Compile = Annotated[bool | None, typer.Option(
    "--compile/--eager", help="Run training steps through torch.compile (first steps slower "
    "while it compiles; evaluation stays eager). Off by default.", show_default=False)]
TensorBoard = Annotated[bool, typer.Option(
    "--tensorboard", help="Also write TensorBoard event files in OUT/tensorboard: loss, lr and "
    "samples/s every step, every logged value every epoch (needs the optional tensorboard "
    "package: pip install 'fastast[tensorboard]'). View with `tensorboard --logdir OUT`.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue the interrupted run in --out exactly where it stopped.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Start over in an --out that holds a run: its run files (best.pt, "
    "last.pt, logs, config.yaml, ...) are replaced; other files are left alone. Without it "
    "(or --resume) a folder holding any run file is refused.")]
R = Annotated[int | None, typer.Option(
    "--r", min=0, help="Tokens removed per block by --method, in training and evaluation.")]
Schedule = Annotated[str | None, typer.Option(help="r schedule: constant or decreasing.")]
Method = Annotated[str | None, typer.Option(help=(
    f"Token reduction method in training and evaluation: {', '.join(METHODS)}. Default: the "
    f"recipe's, else {DEFAULT_METHOD}. Stored in the checkpoint."), show_default=False)]
Elastic = Annotated[bool | None, typer.Option(
    "--elastic/--fixed", help="ElasticAST: clips at their native length packed into rows, "
    "training at random time resolutions (AST students; a fixed-length teacher reads each "
    "clip at q = 1, padded to the dataset's length).", show_default=False)]
MaxTokens = Annotated[int | None, typer.Option(
    min=16, help="ElasticAST: tokens per packed row (2048 by default).")]
Resolutions = Annotated[str | None, typer.Option(
    help="ElasticAST: range of the training time resolution q as LOW,HIGH (frame shift "
    "10 ms × q); 1,4 by default, as ElasticAST.")]
ResolutionSampling = Annotated[str | None, typer.Option(
    help="ElasticAST: draw q from the whole steps of the range (discrete, ElasticAST's "
    "{1, 2, 3, 4}; the default) or uniformly from it (continuous).")]
ElasticPooling = Annotated[str | None, typer.Option(
    help="ElasticAST: attention (masked attention pooling with a learned query per clip, as "
    "published; the default) or cls-dist ((CLS + DIST) / 2, AST's head, fastast's earlier "
    "choice).", show_default=False)]
PositionFit = Annotated[str | None, typer.Option(
    help="ElasticAST: position tables from the AST grid's means over time and over "
    "frequency (marginal, as published; the default) or its best additive fit (additive: "
    "minus the grand mean).", show_default=False)]
TokenDropoutMode = Annotated[str | None, typer.Option(
    help="ElasticAST: token dropout keeping exactly int(n·0.9) of each clip's n patches "
    "(exact, as published; the default) or dropping each with probability 0.1 (bernoulli).",
    show_default=False)]
ProportionalAttention = Annotated[bool | None, typer.Option(
    "--proportional-attention/--no-proportional-attention", help="ToMe's proportional "
    "attention in training (off by default, as ToMe trains); stored in the checkpoint, so "
    "evaluation uses the same.", show_default=False)]


LOG_COLUMNS = [
    Column("epoch", "epoch"),
    Column("train_loss", "train loss", "{:.4f}"),
    Column("accuracy", "accuracy", "{:.4f}"),
    Column("mAP", "mAP", "{:.4f}"),
    Column("mAUC", "mAUC", "{:.4f}"),
    Column("samples_per_s", "train samples/s", "{:.1f}"),
]


class ConsoleReporter:
    """Progress per epoch (a bar on a terminal, plain lines in a log: loss, lr, samples/s) and
    one line per finished epoch."""

    def __init__(self) -> None:
        self.task: Task | None = None

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        self.task = Task(f"epoch {epoch + 1}/{epochs}", batches, transient=True)

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        if self.task is not None:
            self.task.advance(loss=loss, lr=lr, samples_per_s=samples_per_s)

    def epoch_done(self, row: dict[str, float]) -> None:
        self.close()
        console.print(
            f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  accuracy {row['accuracy']:.4f}"
            f"  mAP {row['mAP']:.4f}  ({row['samples_per_s']:.1f} samples/s)"
        )

    def note(self, message: str) -> None:
        console.print(message)

    def close(self) -> None:
        if self.task is not None:
            self.task.close()
            self.task = None


def run(recipe: Path | None, overrides: dict[str, Any], resume: bool,
        overwrite: bool, quiet: bool = False, tensorboard: bool = False,
        max_duration: float | None = None) -> RunResult:
    """Load the configuration, train, and print the run's summary (with TensorBoard event
    files in the run folder when asked)."""
    set_progress(not quiet)
    apply_max_duration(max_duration)
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    if recipe is None and (named := manifest_recipe(overrides.get("data"))) is not None:
        console.print(f"recipe: {named.stem} (named by the manifest; --recipe picks another)")
        recipe = named
    config = load_config(recipe, overrides)
    reporter: ConsoleReporter | TensorBoardReporter = ConsoleReporter()
    if tensorboard:
        reporter = TensorBoardReporter(reporter, Path(config.out or "run") / TENSORBOARD_FOLDER)
    try:
        result = train(config, resume=resume, overwrite=overwrite, reporter=reporter)
    finally:
        reporter.close()
    console.print(rich_table(f"Run {result.out} ({result.split} split)", result.history,
                             LOG_COLUMNS))
    console.print(
        f"best {config.metric} {result.best_metric:.4f} at epoch {result.best_epoch}: "
        f"{result.out / 'best.pt'}"
    )
    return result


@app.command("train-teacher")
@user_errors
def train_teacher(
    recipe: Recipe = None,
    data: Data = None,
    out: Out = None,
    model: Annotated[str | None, typer.Option(
        help="ast, efficientnet-b2 (CMKD's CNN teacher), efficientnet-b0, mobilenetv3-small, "
        "or passt (needs the optional hear21passt package).")] = None,
    size: Annotated[str | None, typer.Option(help="AST size: tiny, small or base.")] = None,
    pooling: Annotated[str | None, typer.Option(
        help="CNN pooling: mean (CMKD) or attention (PSLA).")] = None,
    method: Method = None,
    pretrained: Pretrained = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    per_process_batch: PerProcessBatch = None,
    lr: Lr = None,
    warmup_steps: WarmupSteps = None,
    fold: Fold = None,
    norm_stats: NormStats = None,
    seed: Seed = None,
    device: Device = None,
    num_workers: Workers = None,
    elastic: Elastic = None,
    max_tokens: MaxTokens = None,
    resolutions: Resolutions = None,
    resolution_sampling: ResolutionSampling = None,
    elastic_pooling: ElasticPooling = None,
    position_fit: PositionFit = None,
    token_dropout_mode: TokenDropoutMode = None,
    compile: Compile = None,
    tensorboard: TensorBoard = False,
    cache_dir: CacheDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    max_duration: MaxDuration = None,
) -> None:
    """Train a teacher (or a plain AST, or an ElasticAST) from labels."""
    run(recipe, {
        "elastic": elastic, "max_tokens": max_tokens, "compile": compile,
        "resolutions": parse_resolution_range(resolutions),
        "resolution_sampling": resolution_sampling, "elastic_pooling": elastic_pooling,
        "position_fit": position_fit, "token_dropout_mode": token_dropout_mode,
        "data": data, "out": out, "model": model, "size": size, "pooling": pooling,
        "pretrained": pretrained, "epochs": epochs, "batch_size": batch_size,
        "per_process_batch": per_process_batch, "lr": lr,
        "warmup_steps": warmup_steps, "fold": fold, "norm_stats": norm_stats, "seed": seed,
        "device": device,
        "num_workers": num_workers, "method": method_name(method),
        "teacher": "none", "cache_dir": cache_dir,
    }, resume, overwrite, quiet, tensorboard, max_duration)


@app.command()
@user_errors
def distill(
    recipe: Recipe = None,
    data: Data = None,
    out: Out = None,
    teacher: Annotated[str | None, typer.Option(
        help="Teacher kind: none (ToMe only), efficientnet-b2 (or another CNN), ast or passt. "
        "Default: the kind the teacher checkpoint records (none without a checkpoint); when "
        "given it must match the checkpoint.")] = None,
    teacher_checkpoint: Annotated[Path | None, typer.Option(
        help="The trained teacher (from train-teacher, or an AST checkpoint). {fold} in the "
        "path is the run's fold: each fold's student learns from its own fold's teacher. "
        "none drops the recipe's (so does --teacher none).")
    ] = None,
    kd_lambda: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="λ of Eq. 1: weight of the ground-truth loss.")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="τ of Eq. 1, applied to the teacher's logits.")] = None,
    teacher_logits: Annotated[str | None, typer.Option(
        help="online: teacher runs on the same augmented batch (consistent teaching); "
        "cached: computed once on clean clips, mixed as each batch (faster, inconsistent "
        "under augmentation).")] = None,
    teacher_views: Annotated[int | None, typer.Option(
        min=0, help="K > 0: the teacher's logits on K augmented views of every clip, computed "
        "once into --out/teacher_views.pt (resumable; rebuilt for another teacher or other "
        "augmentation), then each epoch replays one of them: consistent teaching at cached "
        "cost (overrides --teacher-logits). 0: off.")] = None,
    method: Method = None,
    r: R = None,
    schedule: Schedule = None,
    proportional_attention: ProportionalAttention = None,
    model: Annotated[str | None, typer.Option(
        help="Student AST size: tiny, small or base.")] = None,
    pretrained: Pretrained = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    per_process_batch: PerProcessBatch = None,
    lr: Lr = None,
    warmup_steps: WarmupSteps = None,
    fold: Fold = None,
    norm_stats: NormStats = None,
    seed: Seed = None,
    device: Device = None,
    num_workers: Workers = None,
    elastic: Elastic = None,
    max_tokens: MaxTokens = None,
    resolutions: Resolutions = None,
    resolution_sampling: ResolutionSampling = None,
    elastic_pooling: ElasticPooling = None,
    position_fit: PositionFit = None,
    token_dropout_mode: TokenDropoutMode = None,
    compile: Compile = None,
    tensorboard: TensorBoard = False,
    cache_dir: CacheDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    max_duration: MaxDuration = None,
) -> None:
    """Train an AST student with token merging and cross-model knowledge distillation."""
    run(recipe, {
        "elastic": elastic, "max_tokens": max_tokens, "compile": compile,
        "resolutions": parse_resolution_range(resolutions),
        "resolution_sampling": resolution_sampling, "elastic_pooling": elastic_pooling,
        "position_fit": position_fit, "token_dropout_mode": token_dropout_mode,
        "proportional_attention": proportional_attention,
        "data": data, "out": out, "teacher": teacher, "teacher_checkpoint": teacher_checkpoint,
        "kd_lambda": kd_lambda, "temperature": temperature, "teacher_logits": teacher_logits,
        "teacher_views": teacher_views,
        "method": method_name(method), "r": r, "schedule": schedule, "model": "ast",
        "size": model, "pretrained": pretrained,
        "epochs": epochs, "batch_size": batch_size,
        "per_process_batch": per_process_batch, "lr": lr, "warmup_steps": warmup_steps,
        "fold": fold, "norm_stats": norm_stats, "seed": seed,
        "device": device, "num_workers": num_workers, "cache_dir": cache_dir,
    }, resume, overwrite, quiet, tensorboard, max_duration)


def recipe_defaults() -> dict[str, Any]:
    """What a training flag not given takes when the recipe does not set it either (the
    configuration's defaults), for `--help`."""
    return {field.name: field.default for field in fields(TrainConfig)
            if field.default is not MISSING}


DEFAULT_NOTES["train-teacher"] = recipe_defaults
DEFAULT_NOTES["distill"] = lambda: {**recipe_defaults(), "model": recipe_defaults()["size"]}
