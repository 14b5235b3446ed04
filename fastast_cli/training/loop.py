"""The shared training loop of `train-teacher` and `distill`.

One epoch: batches in a reproducible order (training.sampling) → optional teacher logits
(online on the very same augmented batch, or cached) → Eq. 1 loss → Adam step at the recipe's
learning rate. After each epoch: validation metrics, a log row (CSV and JSON lines), `last.pt`
(everything needed to resume) and `best.pt` (best validation metric), both written atomically.

Ctrl-C anywhere in a run (a batch, validation, the teacher's cached logits, a checkpoint being
written) saves `last.pt` at the point reached, and `--resume` continues from it exactly; the
end-of-epoch writes (log row, `best.pt`, `last.pt`) finish together before a Ctrl-C is taken.
A loss that is not finite stops the run before the weights are touched; `last.pt` keeps the last
good epoch. A folder holding any run file is refused unless the run is resumed or overwritten;
the clips are checked (present, labelled, splits not empty) before any work.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fastast_cli.atomic import (
    atomic_path,
    deferred_interrupts,
    json_safe,
    write_json,
    write_text,
)
from fastast_cli.data.checks import check_clips
from fastast_cli.data.dataset import ASTDataset, NativeLengthDataset
from fastast_cli.data.elastic_features import collate_native
from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.devices import resolve_device
from fastast_cli.errors import FastASTError, Interrupted
from fastast_cli.evaluation.metrics import Metrics, compute_metrics
from fastast_cli.evaluation.predict import predict_dataset, to_device
from fastast_cli.models.ast import AST
from fastast_cli.models.checkpoints import read_checkpoint, save_checkpoint
from fastast_cli.models.classifiers import build_classifier, load_classifier, model_kind
from fastast_cli.models.elastic import ElasticAST
from fastast_cli.models.merging import MergeSettings
from fastast_cli.models.reduction.schedule import capped_merging_note
from fastast_cli.training.config import TrainConfig, warmup_steps_for
from fastast_cli.training.distributed import Ranks, close_ranks, init_ranks
from fastast_cli.training.losses import distillation_loss
from fastast_cli.training.provenance import check_teacher_data, data_record, teacher_path
from fastast_cli.training.run_folder import (
    check_run_folder,
    clear_run_folder,
    remove_run_temporaries,
    trim_logs,
)
from fastast_cli.training.sampling import EpochSampler, SeededItems

# Settings that may differ when a run is resumed; any other change is refused.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "num_workers", "out", "data", "cache", "amp"})

LOG_FIELDS = ("epoch", "train_loss", "lr", "accuracy", "mAP", "mAUC", "d_prime",
              "samples_per_s", "seconds")


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training; `last.pt` holds the state reached."""


class Reporter(Protocol):
    """What the loop tells the outside world (progress bars, logs). All calls on rank 0 only."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None: ...
    def epoch_done(self, row: dict[str, float]) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch_done(self, loss: float, lr: float, samples_per_s: float) -> None:
        pass

    def epoch_done(self, row: dict[str, float]) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class Progress:
    """Where the run stands; saved in `last.pt`."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps so far
    best: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    averaged_epochs: int = 0
    epoch_loss: float = 0.0  # loss summed over the epoch's samples so far
    epoch_samples: int = 0


@dataclass
class Mix:
    """Which clips a training batch mixed: item `index` [B] with `partner` [B] by weight `lam`
    [B] (partner = index and lam = 1 for unmixed items)."""

    index: torch.Tensor
    partner: torch.Tensor
    lam: torch.Tensor

    def apply(self, per_clip: torch.Tensor) -> torch.Tensor:
        """Per-clip values [N, C] → the batch's mixed values [B, C]."""
        lam = self.lam.to(per_clip.dtype)[:, None]
        return lam * per_clip[self.index] + (1 - lam) * per_clip[self.partner]


@dataclass
class RunResult:
    """What a finished run produced."""

    out: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]]
    averaged_metrics: Metrics | None = None
    split: str = "valid"  # the split the history's metrics (and best.pt) were measured on


def learning_rate(config: TrainConfig, epoch: int, step: int, warmup_steps: int) -> float:
    """AST's schedule: linear warm-up over the first `warmup_steps` steps (the run's, from
    `warmup_steps_for`), then ×lr_decay at epochs lr_start, lr_start + lr_step, ... (0-based
    epochs: the decay applies from epoch lr_start)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    decays = 0 if epoch < config.lr_start else (epoch - config.lr_start) // config.lr_step + 1
    return config.lr * warm * config.lr_decay**decays


def from_scratch_note(model: str, warmup_steps: int) -> str:
    """The line a run from random weights starts with: it trains from scratch, and its warm-up
    (or that it has none, when --warmup-steps 0 switched it off)."""
    if not warmup_steps:
        return (f"training {model} from scratch (no --pretrained) without lr warm-up "
                "(--warmup-steps 0): a transformer from scratch may stay at chance")
    steps = "step" if warmup_steps == 1 else f"{warmup_steps} steps"
    return (f"training {model} from scratch (no --pretrained): lr warm-up over the first "
            f"{steps}")


def train(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
    reporter: Reporter | None = None,
) -> RunResult:
    """Run (or resume, or start over with `overwrite`) the training that `config` describes;
    returns the run's results."""
    reporter = reporter or SilentReporter()
    out = Path(config.out or "run")
    check_run_folder(out, resume=resume, overwrite=overwrite)
    preferred = resolve_device(config.device)
    ranks = init_ranks(preferred)
    try:
        try:
            trainer = Trainer(config, ranks, ranks.device(preferred), reporter)
        except KeyboardInterrupt:
            kept = f"{out / 'last.pt'} is unchanged" if resume else f"nothing was written to {out}"
            raise TrainingInterrupted(f"while starting: {kept}") from None
        return trainer.run(resume, overwrite=overwrite)
    finally:
        close_ranks(ranks)


class Trainer:
    """One training run; see the module docstring."""

    def __init__(
        self, config: TrainConfig, ranks: Ranks, device: torch.device, reporter: Reporter
    ) -> None:
        self.config, self.ranks, self.device = config, ranks, device
        self.reporter = reporter if ranks.is_main else SilentReporter()
        self.out = Path(config.out or "run")
        self.manifest: Manifest = load_manifest(config.data or "")
        self.mean, self.std = self.manifest.norm_stats(config.fold)
        self.use_amp = config.amp and device.type == "cuda"
        torch.manual_seed(config.seed)  # the model's initial weights
        self.train_items = SeededItems(self._dataset("train", training=True), config.seed)
        self.eval_set = self._dataset(self.manifest.selection_split, training=False)
        check_clips(self.train_items.dataset.entries, self.train_items.dataset.datafile, "train",
                    "nothing to train on")
        check_clips(self.eval_set.entries, self.eval_set.datafile, self.manifest.selection_split,
                    "every epoch is validated on it, and best.pt is the best validated epoch")
        self.model = self._build_model().to(device)
        self.teacher_path = ("" if config.teacher_checkpoint is None or config.teacher == "none"
                             else teacher_path(config.teacher_checkpoint, self.manifest,
                                               config.fold))
        self.teacher = self._load_teacher()
        if self._teacher_needs_fixed_view():  # teach from the q = 1 view of each clip
            self.train_items.dataset.teacher_length = self.manifest.target_length
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.progress = Progress()
        self.warmup_steps = warmup_steps_for(config, len(self._loader()))
        self.averaged: dict[str, torch.Tensor] | None = None
        self.cached_logits: torch.Tensor | None = None

    # --- set-up ------------------------------------------------------------------------------

    def _dataset(self, split: str, training: bool) -> ASTDataset:
        config = self.config
        options: dict[str, Any] = {"training": training}
        if training:  # partner and λ of mixup come along, for cached teacher logits
            options.update(freqm=config.freqm, timem=config.timem, mixup=config.mixup,
                           noise=config.noise, return_mix=True)
        if config.cache:
            options["cache_dir"] = self.manifest.cache_dir
        if config.elastic:
            low, high = config.resolutions
            return NativeLengthDataset(
                self.manifest.datafile(split, config.fold), self.manifest.labels_csv,
                target_length=self.manifest.target_length, mean=self.mean, std=self.std,
                num_mel_bins=self.manifest.num_mel_bins,
                resolutions=(low, high) if training else (1.0, 1.0),
                discrete=config.resolution_sampling == "discrete", **options,
            )
        return self.manifest.dataset_for(split, config.fold, **options)

    def _build_model(self) -> nn.Module:
        config = self.config
        model = build_classifier(
            config.model, self.manifest.label_names, target_length=self.manifest.target_length,
            num_mel_bins=self.manifest.num_mel_bins, size=config.size, depth=config.depth,
            fstride=config.fstride,
            tstride=config.tstride, pooling=config.pooling, pretrained=config.pretrained,
            elastic=config.elastic, max_tokens=config.max_tokens,
        )
        if isinstance(model, AST | ElasticAST):
            model.set_r(config.r, config.schedule, config.proportional_attention)
        if isinstance(model, AST) and config.r:
            note = capped_merging_note(model.config.num_patches, model.config.depth, config.r,
                                       config.schedule)
            if note:
                self.reporter.note(note)
        if isinstance(model, ElasticAST):
            model.token_dropout = config.token_dropout
            longest = model.num_tokens(
                torch.zeros(self.manifest.target_length, self.manifest.num_mel_bins))
            if longest > config.max_tokens:
                raise FastASTError(
                    f"--max-tokens {config.max_tokens} cannot hold the longest clip "
                    f"({self.manifest.target_length} frames = {longest} tokens): raise it"
                )
        return model

    def _load_teacher(self) -> nn.Module | None:
        """The frozen teacher, or None. With teacher `auto` its kind is the checkpoint's (and is
        recorded in the run's config); a kind that was given must be the checkpoint's."""
        config = self.config
        if config.teacher_checkpoint is None or config.teacher == "none":
            self.config = replace(config, teacher="none")
            return None
        teacher = load_classifier(self.teacher_path, device=self.device)
        kind = model_kind(teacher)
        if config.teacher not in ("auto", kind):
            raise FastASTError(
                f"--teacher {config.teacher} but {self.teacher_path} holds a {kind} "
                f"model: give --teacher {kind}, or leave --teacher out to use the checkpoint's"
            )
        self.config = replace(config, teacher=kind)
        self.reporter.note(f"teacher: {kind} from {self.teacher_path}")
        warning = check_teacher_data(teacher.meta, self.teacher_path, self.manifest, config.fold)
        if warning is not None:
            self.reporter.note(f"warning: {warning}")
        frames = getattr(teacher.config, "target_length", None)
        if frames is not None and (frames, teacher.config.num_mel_bins) != (
            self.manifest.target_length, self.manifest.num_mel_bins
        ):
            raise FastASTError(
                f"the teacher {self.teacher_path} reads {frames} frames × "
                f"{teacher.config.num_mel_bins} bins, but {self.manifest.path} gives "
                f"{self.manifest.target_length} × {self.manifest.num_mel_bins}: train the teacher "
                "on this dataset (train-teacher, or --pretrained to adapt a checkpoint)"
            )
        if teacher.labels and teacher.labels != self.manifest.label_names:
            raise FastASTError(
                f"the teacher {self.teacher_path} was trained on other labels "
                f"({len(teacher.labels)} classes) than {self.manifest.path}"
            )
        teacher_mean = teacher.meta.get("mean")
        if teacher_mean is not None and abs(teacher_mean - self.mean) > 1e-3:
            self.reporter.note(
                "warning: the teacher was trained with other normalization stats "
                f"(mean {teacher_mean:.3f} vs {self.mean:.3f}); it sees the student's input"
            )
        teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher

    def _teacher_needs_fixed_view(self) -> bool:
        """An ElasticAST student taught online by a fixed-length teacher: the teacher reads the
        q = 1 view of each clip (same audio, same masks), padded or cut as AST does."""
        return (self.config.elastic and self.teacher is not None
                and self.config.teacher_logits == "online"
                and not isinstance(self.teacher, ElasticAST))

    # --- the run -----------------------------------------------------------------------------

    def run(self, resume: bool, overwrite: bool = False) -> RunResult:
        config = self.config
        check_run_folder(self.out, resume=resume, overwrite=overwrite)
        if resume:
            self._restore(self.out / "last.pt")
        self.ranks.barrier()  # every rank has checked the folder before rank 0 writes to it
        try:
            if self.ranks.is_main:
                self._start_folder(overwrite)
            if config.from_scratch and not resume:
                self.reporter.note(from_scratch_note(config.model, self.warmup_steps))
            if self.teacher is not None and config.teacher_logits == "cached":
                self.cached_logits = self._teacher_logits_cache()
            network = self._network()
            while self.progress.epoch < config.epochs:
                loss, seconds, samples = self._train_epoch(network)
                self._end_epoch(loss, seconds, samples)
            averaged_metrics = self._finish_averaging()
            if self.ranks.is_main:
                self._write_summary(averaged_metrics)
        except KeyboardInterrupt:
            self._interrupted()
        return RunResult(self.out, self.progress.best, self.progress.best_epoch,
                         self.progress.history, averaged_metrics, self.manifest.selection_split)

    def _start_folder(self, overwrite: bool) -> None:
        """Create (or clear, with `overwrite`) the run folder and write config.yaml; on resume,
        drop log rows that `last.pt` does not cover and temporaries of a killed process.

        A new run's first file is its initial `last.pt`: a folder holding any run file can then
        always be resumed, whenever the process was killed.
        """
        if overwrite:
            clear_run_folder(self.out)
        remove_run_temporaries(self.out)
        dropped = trim_logs(self.out, self.progress.epoch)
        if dropped:
            self.reporter.note(f"dropped {dropped} log rows of epochs after the saved state")
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / "last.pt").exists():
            self._save_last()
        write_text(self.out / "config.yaml",
                   yaml.safe_dump(self.config.to_dict(), sort_keys=False))

    def _interrupted(self) -> NoReturn:
        """Ctrl-C: save `last.pt` at the point reached (a second Ctrl-C waits for the write)."""
        progress = self.progress
        if self.ranks.is_main:
            try:
                with deferred_interrupts():
                    self._save_last()
            except KeyboardInterrupt:  # a second Ctrl-C, taken once the state is saved
                pass
        where = (f"epoch {progress.epoch + 1}, after batch {progress.batch}"
                 if progress.epoch < self.config.epochs else "after the last epoch")
        raise TrainingInterrupted(
            f"{where}: the state is saved in {self.out / 'last.pt'}; continue with --resume"
        ) from None

    def _network(self) -> nn.Module:
        """What training steps run: the model, wrapped for DDP and, with `compile`, compiled
        (its parameters stay the model's; checkpoints and evaluation use the model itself)."""
        network = self.model
        if self.ranks.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(self.model, device_ids=ids)
        return torch.compile(network) if self.config.compile else network

    def _loader(self) -> DataLoader:
        sampler = EpochSampler(len(self.train_items), self.config.seed,
                               self.ranks.rank, self.ranks.world)
        sampler.set_epoch(self.progress.epoch, self.progress.batch * self.config.batch_size)
        self.train_items.set_epoch(self.progress.epoch)
        return DataLoader(
            self.train_items, batch_size=self.config.batch_size, sampler=sampler,
            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, collate_fn=self._collate,
        )

    @property
    def _collate(self) -> Callable | None:
        """Native-length clips travel as lists (ElasticAST); fixed-length ones as one tensor."""
        return collate_native if self.config.elastic else None

    def _train_epoch(self, network: nn.Module) -> tuple[float, float, int]:
        """One epoch (or what is left of it): the epoch's mean loss, and the seconds and samples
        of this call (for throughput)."""
        config, progress = self.config, self.progress
        loader = self._loader()
        network.train()
        self.reporter.epoch_started(progress.epoch, config.epochs, progress.batch + len(loader))
        samples, started = 0, time.perf_counter()
        batches: Iterator = iter(loader)
        try:
            for fbank, target, partner, lam, *teacher_view, index in batches:
                with deferred_interrupts():  # a step and its count go together: exact resume
                    lr = learning_rate(config, progress.epoch, progress.step,
                                       self.warmup_steps)
                    loss = self._step(network, fbank, target, Mix(index, partner, lam), lr,
                                      teacher_view[0] if teacher_view else None)
                    progress.epoch_loss += loss * len(fbank)
                    progress.epoch_samples += len(fbank)
                    samples += len(fbank)
                    progress.batch += 1
                    progress.step += 1
                elapsed = time.perf_counter() - started
                self.reporter.batch_done(loss, lr, samples / max(elapsed, 1e-9))
        except KeyboardInterrupt:
            del batches  # stops the loader's workers before the state is saved
            raise
        mean_loss = progress.epoch_loss / max(progress.epoch_samples, 1)
        return mean_loss, time.perf_counter() - started, samples

    def _step(self, network: nn.Module, fbank: torch.Tensor, target: torch.Tensor,
              mix: Mix, lr: float, teacher_view: torch.Tensor | None = None) -> float:
        fbank = to_device(fbank, self.device)
        target = target.to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, torch.float16, enabled=self.use_amp):
            logits = network(fbank)
            teacher_logits = self._teacher_logits(fbank, mix, teacher_view)
            loss = distillation_loss(
                logits.float(), target, teacher_logits, self.config.loss,
                self.config.kd_lambda, self.config.temperature,
            )
        if not torch.isfinite(loss):
            raise FastASTError(
                f"the loss became {loss.item()} in epoch {self.progress.epoch + 1} at step "
                f"{self.progress.step}; training stopped and {self.out / 'last.pt'} keeps the last "
                "good epoch (try a lower --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.item())

    def _teacher_logits(
        self, fbank: torch.Tensor | list[torch.Tensor], mix: Mix,
        teacher_view: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The teacher's logits for this very batch (online), or its cached clean-clip logits,
        mixed as the batch was: λ·z_i + (1-λ)·z_partner (EfficientAT mixes its stored teacher
        logits so).

        A fixed-length teacher of an ElasticAST student reads `teacher_view` [B, T, F]: each
        clip at q = 1 with the student's masks, padded as AST pads (zero log-mel frames at the
        end). Native-length clips without a view (an ElasticAST teacher) go to it as they are.
        """
        if self.teacher is None:
            return None
        if self.cached_logits is not None:
            return mix.apply(self.cached_logits).to(self.device)
        if teacher_view is not None:
            fbank = to_device(teacher_view, self.device)
        with torch.no_grad():
            return self.teacher(fbank).float()

    def _teacher_logits_cache(self) -> torch.Tensor:
        """Teacher logits of every un-augmented training clip, computed once and kept on disk.

        Faster than online teaching, but the student then trains on augmented input against
        logits of the clean clip: consistency under augmentation is lost (CMKD's finding is that
        consistent teaching works better).
        """
        path = self.out / "teacher_logits.pt"
        clips = [str(entry.wav) for entry in self.train_items.dataset.entries]
        teacher_file = Path(self.teacher_path).resolve()
        stat = teacher_file.stat()
        source = f"{teacher_file}:{stat.st_size}:{stat.st_mtime_ns}"  # retrained → recomputed
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("clips") == clips and cached.get("teacher") == source:
                return cached["logits"]
        except Exception:  # missing, or damaged by an interruption: compute it again
            pass
        self.reporter.note("computing the teacher's logits once (teacher_logits: cached)")
        options = {"cache_dir": self.manifest.cache_dir} if self.config.cache else {}
        clean = self.manifest.dataset_for("train", self.config.fold, **options)  # fixed length
        assert self.teacher is not None
        logits, _ = predict_dataset(self.teacher, clean, self.config.batch_size, self.device,
                                    self.use_amp)
        if self.ranks.is_main:
            with atomic_path(path) as temporary:
                torch.save({"clips": clips, "teacher": source, "logits": logits}, temporary)
        return logits

    # --- end of epoch ------------------------------------------------------------------------

    def _end_epoch(self, loss: float, seconds: float, samples: int) -> None:
        progress, config = self.progress, self.config
        loss = self.ranks.mean(loss)
        metrics = self._evaluate(self.model)
        row = {
            "epoch": progress.epoch + 1, "train_loss": loss,
            "lr": learning_rate(config, progress.epoch, max(progress.step - 1, 0),
                                self.warmup_steps),
            **metrics.summary(), "samples_per_s": samples * self.ranks.world / max(seconds, 1e-9),
            "seconds": seconds,
        }
        score = row[config.metric]
        improved = not math.isnan(score) and score > progress.best
        with deferred_interrupts():  # the epoch's state, log row and checkpoints go together
            progress.history.append(row)
            if improved:
                progress.best, progress.best_epoch = score, progress.epoch + 1
            self._accumulate_average()
            progress.epoch += 1
            progress.batch, progress.epoch_loss, progress.epoch_samples = 0, 0.0, 0
            if self.ranks.is_main:
                self._write_log(row)
                if improved:
                    save_checkpoint(self.out / "best.pt", self.model, **self._model_meta(row))
                self._save_last()
                self.reporter.epoch_done(row)
        self.ranks.barrier()

    def _write_summary(self, averaged: Metrics | None) -> None:
        """summary.json: written once the run is complete (a finished-run marker for tools)."""
        summary = {
            "metric": self.config.metric, "split": self.manifest.selection_split,
            "best": self.progress.best,
            "best_epoch": self.progress.best_epoch, "epochs": self.config.epochs,
            "best_checkpoint": str(self.out / "best.pt"), "last": self.progress.history[-1],
            "averaged": averaged.summary() if averaged is not None else None,
        }
        write_json(self.out / "summary.json", summary, indent=2)

    def _evaluate(self, model: nn.Module) -> Metrics:
        predictions, targets = predict_dataset(model, self.eval_set, self.config.batch_size,
                                               self.device, self.use_amp,
                                               collate_fn=self._collate)
        return compute_metrics(predictions.numpy(), targets.numpy())

    def _write_log(self, row: dict[str, float]) -> None:
        csv_path = self.out / "log.csv"
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        with (self.out / "log.jsonl").open("a") as stream:
            stream.write(json.dumps(json_safe(row), allow_nan=False) + "\n")

    def _model_meta(self, row: dict[str, float] | None = None) -> dict[str, Any]:
        """What evaluate/sweep/predict need besides the weights."""
        meta: dict[str, Any] = {
            "mean": self.mean, "std": self.std, "target_length": self.manifest.target_length,
            "dataset": self.manifest.dataset, "r": self.config.r, "schedule": self.config.schedule,
            "loss": self.config.loss, "metric": self.config.metric,
            **data_record(self.manifest, self.config.fold),
            "merging": MergeSettings(self.config.r, self.config.schedule,
                                     self.config.proportional_attention).to_meta(),
        }
        if row is not None:
            meta["epoch"] = int(row["epoch"])
            meta["validation"] = {k: float(row[k]) for k in ("accuracy", "mAP", "mAUC", "d_prime")}
        return meta

    # --- checkpoint weight averaging (AudioSet recipe) ----------------------------------------

    def _averaging_now(self) -> bool:
        config, epoch = self.config, self.progress.epoch + 1
        return config.average_from is not None and (
            config.average_from <= epoch <= (config.average_to or 0)
        )

    def _accumulate_average(self) -> None:
        """Running mean of the weights at the end of each epoch in [average_from, average_to]."""
        if not self._averaging_now():
            return
        state = {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}
        count = self.progress.averaged_epochs
        if self.averaged is None or count == 0:
            self.averaged = state
        else:
            for name, value in state.items():
                self.averaged[name] += (value - self.averaged[name]) / (count + 1)
        self.progress.averaged_epochs = count + 1

    def _finish_averaging(self) -> Metrics | None:
        if self.averaged is None:
            return None
        reference = self.model.state_dict()
        averaged_model = copy.deepcopy(self.model)
        averaged_model.load_state_dict(
            {k: v.to(reference[k].dtype) for k, v in self.averaged.items()}
        )
        metrics = self._evaluate(averaged_model)
        if self.ranks.is_main:
            save_checkpoint(self.out / "averaged.pt", averaged_model, **self._model_meta(),
                            averaged_epochs=self.progress.averaged_epochs,
                            validation=metrics.summary())
            self.reporter.note(
                f"weight-averaged model of {self.progress.averaged_epochs} epochs: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics.summary().items())
            )
        return metrics

    # --- resume ------------------------------------------------------------------------------

    def _save_last(self) -> None:
        progress = self.progress
        save_checkpoint(
            self.out / "last.pt", self.model, **self._model_meta(),
            progress={
                "epoch": progress.epoch, "batch": progress.batch, "step": progress.step,
                "best": progress.best if math.isfinite(progress.best) else None,
                "best_epoch": progress.best_epoch, "history": progress.history,
                "averaged_epochs": progress.averaged_epochs,
                "epoch_loss": progress.epoch_loss, "epoch_samples": progress.epoch_samples,
            },
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            averaged=self.averaged,
            train_config=self.config.to_dict(),
        )

    def _restore(self, path: Path) -> None:
        payload = read_checkpoint(path)
        meta = payload["meta"]
        saved_config = dict(meta.get("train_config", {}))
        if self.config.warmup_steps is None and saved_config.get("warmup_steps") == (
            self.warmup_steps
        ):  # a run saved before warm-up had a default, with the default's steps
            saved_config["warmup_steps"] = None
        changed = [k for k, v in self.config.to_dict().items()
                   if k not in RESUMABLE_CHANGES and saved_config.get(k, v) != v]
        if changed:
            raise FastASTError(
                f"{path} was trained with other settings ({', '.join(changed)}); "
                "resume with the same recipe and flags"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(meta["optimizer"])
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        saved = meta["progress"]
        self.progress = Progress(
            epoch=saved["epoch"], batch=saved["batch"], step=saved["step"],
            best=saved["best"] if saved["best"] is not None else -math.inf,
            best_epoch=saved["best_epoch"], history=list(saved["history"]),
            averaged_epochs=saved["averaged_epochs"], epoch_loss=saved["epoch_loss"],
            epoch_samples=saved["epoch_samples"],
        )
        self.averaged = meta.get("averaged")
        self.reporter.note(
            f"resuming {self.out} at epoch {self.progress.epoch + 1}, batch {self.progress.batch}"
        )
