"""The shared training loop of `train-teacher` and `distill`.

One epoch: batches in a reproducible order (training.sampling) → optional teacher logits
(online on the very same augmented batch, or cached; training.teacher) → Eq. 1 loss → Adam step
at the recipe's learning rate. After each epoch: validation metrics (each rank of a torchrun job
scores its shard, the scores are gathered), a log row (CSV and JSON lines), `last.pt`
(everything needed to resume; training.resume) and `best.pt` (best validation metric), both
written atomically; weight averaging (training.averaging) once the epochs are done.

Ctrl-C anywhere in a run (a batch, validation, the teacher's cached logits, a checkpoint being
written) saves `last.pt` at the point reached, and `--resume` continues from it exactly; the
end-of-epoch writes (log row, `best.pt`, `last.pt`) finish together before a Ctrl-C is taken.
A loss that is not finite stops the run before the weights are touched; `last.pt` keeps the last
good epoch. A folder holding any run file is refused unless the run is resumed or overwritten;
the clips are checked (present, labelled, splits not empty) before any work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fastast_cli.atomic import check_output, deferred_interrupts, write_text
from fastast_cli.data.checks import check_clips
from fastast_cli.data.dataset import ASTDataset
from fastast_cli.data.elastic_features import collate_native
from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.devices import resolve_device
from fastast_cli.distributed import Ranks, close_ranks, init_ranks
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.metrics import Metrics, compute_metrics
from fastast_cli.evaluation.predict import predict_dataset, to_device
from fastast_cli.locks import folder_lock
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.signals import exit_code, ignore_stop_signals, signal_name
from fastast_cli.training import averaging
from fastast_cli.training.config import TrainConfig, warmup_steps_for
from fastast_cli.training.losses import distillation_loss
from fastast_cli.training.reporting import Reporter, RunResult, SilentReporter, TrainingInterrupted
from fastast_cli.training.resume import Progress, restore_run
from fastast_cli.training.run_folder import (
    append_log_row,
    check_run_folder,
    clear_run_folder,
    remove_run_temporaries,
    trim_logs,
    write_summary,
)
from fastast_cli.training.sampling import EpochSampler, SeededItems
from fastast_cli.training.schedule import from_scratch_note, learning_rate
from fastast_cli.training.setup import feature_cache_dir, model_meta, run_dataset, run_model
from fastast_cli.training.teacher import (
    Mix,
    cached_teacher_logits,
    run_teacher,
    teacher_view_frames,
)

__all__ = ["Mix", "Progress", "Ranks", "RunResult", "SilentReporter", "Trainer",
           "TrainingInterrupted", "learning_rate", "train"]


def train(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
    reporter: Reporter | None = None,
) -> RunResult:
    """Run (or resume, or start over with `overwrite`) the training that `config` describes;
    returns the run's results."""
    reporter = reporter or SilentReporter()
    out = Path(config.out or "run")
    # Refused before the slow set-up (data, model, teacher); `Trainer.run` checks again with
    # the folder locked, so that no other process starts or resumes a run there in between.
    check_run_folder(out, resume=resume, overwrite=overwrite)
    cache = feature_cache_dir(config)
    if cache is not None and not cache.is_relative_to(out):
        check_output(cache, folder=True, option="the feature cache (--cache-dir)")
    preferred = resolve_device(config.device)
    ranks = init_ranks(preferred)
    try:
        with folder_lock(out) if ranks.is_main else nullcontext():
            try:
                trainer = Trainer(config, ranks, ranks.device(preferred), reporter)
            except KeyboardInterrupt as error:
                kept = (f"{out / 'last.pt'} is unchanged" if resume
                        else f"nothing was written to {out}")
                raise TrainingInterrupted(f"while starting ({signal_name(error)}): {kept}",
                                          exit_code(error)) from None
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
        self.model = run_model(config, self.manifest, self.reporter.note).to(device)
        self.teacher, self.teacher_path, self.config = run_teacher(
            config, self.manifest, self.mean, device, self.reporter.note)
        if frames := teacher_view_frames(self.teacher, self.model, self.config):  # q = 1 views
            self.train_items.dataset.teacher_length = frames
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
        return run_dataset(self.config, self.manifest, split, training, self.mean, self.std)

    def _network(self) -> nn.Module:
        """What training steps run: the model, wrapped for DDP and, with `compile`, compiled
        (its parameters stay the model's; checkpoints and evaluation use the model itself)."""
        network = self.model
        if self.ranks.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(self.model, device_ids=ids)
        return torch.compile(network) if self.config.compile else network

    # --- the run: epochs → batches → step ----------------------------------------------------

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
                write_summary(self.out, self.config, self.manifest.selection_split,
                              self.progress, averaged_metrics)
        except KeyboardInterrupt as error:
            self._interrupted(error)
        return RunResult(self.out, self.progress.best, self.progress.best_epoch,
                         self.progress.history, averaged_metrics, self.manifest.selection_split)

    def _loader(self) -> DataLoader:
        sampler = EpochSampler(len(self.train_items), self.config.seed,
                               self.ranks.rank, self.ranks.world)
        sampler.set_epoch(self.progress.epoch, self.progress.batch * self.config.batch_size)
        self.train_items.set_epoch(self.progress.epoch)
        return DataLoader(
            self.train_items, batch_size=self.config.batch_size, sampler=sampler,
            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, collate_fn=self._collate,
            worker_init_fn=ignore_stop_signals,
        )

    @property
    def _collate(self) -> Callable | None:
        """Native-length clips travel as lists (ElasticAST); fixed-length ones as one tensor."""
        return collate_native if self.model.input_spec().native_length else None

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
        """The teacher's logits of every clean (fixed-length) training clip, once per run."""
        assert self.teacher is not None
        cache = feature_cache_dir(self.config)
        options = {"cache_dir": cache} if cache is not None else {}
        clean = self.manifest.dataset_for("train", self.config.fold, **options)
        return cached_teacher_logits(
            self.teacher, self.teacher_path, self.out / "teacher_logits.pt", clean,
            [str(entry.wav) for entry in self.train_items.dataset.entries],
            self.config.batch_size, self.device, self.use_amp, ranks=self.ranks,
            note=self.reporter.note,
        )

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
                append_log_row(self.out, row)
                if improved:
                    save_checkpoint(self.out / "best.pt", self.model, **self._model_meta(row))
                self._save_last()
                self.reporter.epoch_done(row)
        self.ranks.barrier()

    def _evaluate(self, model: nn.Module) -> Metrics:
        """Metrics on the validation split; each rank of a torchrun job scores its shard."""
        predictions, targets = predict_dataset(model, self.eval_set, self.config.batch_size,
                                               self.device, self.use_amp,
                                               collate_fn=self._collate, ranks=self.ranks)
        return compute_metrics(predictions.numpy(), targets.numpy())

    def _model_meta(self, row: dict[str, float] | None = None) -> dict[str, Any]:
        return model_meta(self.config, self.manifest, self.mean, self.std, row)

    # --- checkpoint weight averaging (AudioSet recipe) ----------------------------------------

    def _accumulate_average(self) -> None:
        """Add the weights of the epoch ending now when it is in [average_from, average_to]."""
        config, progress = self.config, self.progress
        if averaging.averaging_epoch(config.average_from, config.average_to, progress.epoch + 1):
            self.averaged = averaging.accumulate(self.averaged, progress.averaged_epochs,
                                                 self.model)
            progress.averaged_epochs += 1

    def _finish_averaging(self) -> Metrics | None:
        """Validate the averaged weights and save them as averaged.pt."""
        if self.averaged is None:
            return None
        model = averaging.averaged_model(self.model, self.averaged)
        metrics = self._evaluate(model)
        if self.ranks.is_main:
            save_checkpoint(self.out / "averaged.pt", model, **self._model_meta(),
                            averaged_epochs=self.progress.averaged_epochs,
                            validation=metrics.summary())
            self.reporter.note(
                f"weight-averaged model of {self.progress.averaged_epochs} epochs: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics.summary().items())
            )
        return metrics

    # --- run folder and resume ---------------------------------------------------------------

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

    def _interrupted(self, error: KeyboardInterrupt) -> NoReturn:
        """Ctrl-C, SIGTERM or SIGHUP: save `last.pt` at the point reached (a second stop
        request waits for the write)."""
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
            f"{signal_name(error)} in {where}: the state is saved in {self.out / 'last.pt'}; "
            "continue with --resume", exit_code(error)) from None

    def _save_last(self) -> None:
        """last.pt: the model with its meta, and the run's state at the top level."""
        save_checkpoint(
            self.out / "last.pt", self.model, **self._model_meta(),
            train_config=self.config.to_dict(),
            state={"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                   "progress": self.progress.to_dict(), "averaged": self.averaged},
        )

    def _restore(self, path: Path) -> None:
        """Continue from `path` (this layout or the one before, with the state in meta)."""
        self.progress, self.averaged = restore_run(
            path, self.model, self.optimizer, self.scaler, self.config.to_dict(),
            self.warmup_steps, self.manifest.identity)
        self.reporter.note(
            f"resuming {self.out} at epoch {self.progress.epoch + 1}, batch {self.progress.batch}"
        )
