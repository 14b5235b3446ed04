"""The shared training loop of `train-teacher` and `distill`.

One epoch: batches in a reproducible order (training.sampling) → optional teacher predictions
(online on the very same augmented batch; cached of the clean clips, mixed as the batch was; or
replayed: cached of the very view the student sees; training.teacher) → Eq. 1 loss → Adam step
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
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fastast_cli.atomic import check_output, deferred_interrupts, write_text
from fastast_cli.data.checks import check_clips, check_held_out
from fastast_cli.data.dataset import ASTDataset
from fastast_cli.data.elastic_features import collate_native
from fastast_cli.data.manifest import Manifest, load_manifest
from fastast_cli.devices import resolve_device
from fastast_cli.distributed import Ranks, close_ranks, init_ranks, unused_parameters
from fastast_cli.errors import FastASTError, NonFiniteScores
from fastast_cli.evaluation.metrics import Metrics, compute_metrics
from fastast_cli.evaluation.predict import predict_dataset, to_device
from fastast_cli.interrupt import abandonable, can_abandon
from fastast_cli.locks import folder_lock
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.signals import (
    exit_code,
    ignore_stop_signals,
    recorded_stops,
    signal_name,
    stop_exception,
)
from fastast_cli.training import averaging
from fastast_cli.training.auto import DataShape, Machine, auto_line, resolve_auto
from fastast_cli.training.batch import Batch, Fbanks, Mix, collate_batch
from fastast_cli.training.config import TrainConfig, process_batch, warmup_steps_for
from fastast_cli.training.losses import distillation_loss, teacher_targets
from fastast_cli.training.plan import TimeEstimate, plan_line
from fastast_cli.training.reporting import Reporter, RunResult, SilentReporter, TrainingInterrupted
from fastast_cli.training.resume import Progress, restore_run, with_run_choices
from fastast_cli.training.run_folder import (
    append_log_row,
    check_run_folder,
    clear_run_folder,
    remove_run_temporaries,
    trim_logs,
    write_summary,
)
from fastast_cli.training.sampling import EpochSampler, SeededItems, seed_step
from fastast_cli.training.schedule import from_scratch_note, learning_rate
from fastast_cli.training.setup import feature_cache_dir, model_meta, run_dataset, run_model
from fastast_cli.training.teacher import (
    ReplayedViews,
    cached_teacher_logits,
    file_digest,
    replayed_views,
    run_teacher,
    teacher_view,
    views_dataset,
    views_record,
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
    if resume:
        config = with_run_choices(config, out)
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
        self.mean, self.std = self.manifest.norm_stats(config.fold, config.norm_stats)
        self.use_amp = config.amp and device.type == "cuda"
        torch.manual_seed(config.seed)  # the model's initial weights
        self.train_items = SeededItems(self._dataset("train", training=True), config.seed)
        self.eval_set = self._dataset(self.manifest.selection_split, training=False)
        check_clips(self.train_items.dataset.entries, self.train_items.dataset.datafile, "train",
                    "nothing to train on")
        check_clips(self.eval_set.entries, self.eval_set.datafile, self.manifest.selection_split,
                    "every epoch is validated on it, and best.pt is the best validated epoch")
        check_held_out(self.manifest, config.fold, self.train_items.dataset.entries)
        data_shape = DataShape.of([len(e.labels) for e in self.train_items.dataset.entries])
        self.config = config = resolve_auto(config, data_shape, Machine.of(device))
        self.batch_size = process_batch(config, ranks.world)  # this process's share of a step
        if config.auto:
            self.reporter.note(auto_line(config, data_shape, Machine.of(device)))
        self.model = run_model(config, self.manifest, self.reporter.note).to(device)
        self.teacher, self.teacher_path, self.config = run_teacher(
            config, self.manifest, self.mean, device, self.reporter.note)
        self.teacher_view = teacher_view(self.teacher, self.model)  # q = 1 clip, or its audio
        if self.teacher is not None and config.teacher_views:
            self.train_items.views = config.teacher_views  # items replay the stored views
        elif self.teacher_view is not None and config.teacher_logits == "online":
            self.teacher_view.give(self.train_items.dataset)
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.progress = Progress()
        self.steps_per_epoch = len(self._loader())
        self.warmup_steps = warmup_steps_for(config, self.steps_per_epoch)
        self.averaged: dict[str, torch.Tensor] | None = None
        self.cached_targets: torch.Tensor | None = None  # [N, C] clean clips' predictions
        self.replayed: ReplayedViews | None = None
        self.stops: list[int] = []  # stop requests recorded under torchrun (signal numbers)
        self.estimate = TimeEstimate(device, tiny=config.model != "ast" or config.size == "tiny")

    # --- set-up ------------------------------------------------------------------------------

    def _dataset(self, split: str, training: bool) -> ASTDataset:
        return run_dataset(self.config, self.manifest, split, training, self.mean, self.std)

    def _network(self) -> nn.Module:
        """What training steps run: the model, wrapped for DDP and, with `compile`, compiled
        (its parameters stay the model's; checkpoints and evaluation use the model itself)."""
        network = self.model
        if self.ranks.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = unused_parameters(self.model, self.model.input_spec().example(self.device))
            network = DistributedDataParallel(self.model, device_ids=ids,
                                              find_unused_parameters=bool(unused))
        return torch.compile(network) if self.config.compile else network

    # --- the run: epochs → batches → step ----------------------------------------------------

    def run(self, resume: bool, overwrite: bool = False) -> RunResult:
        config = self.config
        check_run_folder(self.out, resume=resume, overwrite=overwrite)
        if resume:
            self._restore(self.out / "last.pt")
        self.ranks.barrier()  # every rank has checked the folder before rank 0 writes to it
        # under torchrun a stop request is recorded, and the ranks stop together where they
        # agree on it (after a step or an epoch); alone, it is taken as it comes
        stops = recorded_stops() if self.ranks.active else nullcontext([])
        try:
            with stops as self.stops:
                if self.ranks.is_main:
                    self._start_folder(overwrite)
                self.reporter.note(self._plan())
                if config.from_scratch and not resume:
                    self.reporter.note(from_scratch_note(config.model, self.warmup_steps))
                if self.teacher is not None and config.teacher_views:
                    self.replayed = self._replayed_views()
                elif self.teacher is not None and config.teacher_logits == "cached":
                    self.cached_targets = teacher_targets(self._teacher_logits_cache(),
                                                          config.loss, config.temperature)
                network = self._network()
                self._stop_if_asked()
                while self.progress.epoch < config.epochs:
                    loss, seconds, samples = self._train_epoch(network)
                    self._end_epoch(loss, seconds, samples)
                    self._stop_if_asked()
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
        sampler.set_epoch(self.progress.epoch, self.progress.batch * self.batch_size)
        self.train_items.set_epoch(self.progress.epoch)
        collate = partial(collate_batch, native_length=self.model.input_spec().native_length)
        return DataLoader(
            self.train_items, batch_size=self.batch_size, sampler=sampler,
            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, collate_fn=collate, worker_init_fn=ignore_stop_signals,
        )

    @property
    def _eval_collate(self) -> Callable | None:
        """Native-length clips travel as lists (ElasticAST); fixed-length ones as one tensor."""
        return collate_native if self.model.input_spec().native_length else None

    def _train_epoch(self, network: nn.Module) -> tuple[float, float, int]:
        """One epoch (or what is left of it): the epoch's mean loss, and the seconds and samples
        of this call (for throughput)."""
        config, progress = self.config, self.progress
        loader = self._loader()
        network.train()
        epoch_batches = progress.batch + len(loader)
        self.reporter.epoch_started(progress.epoch, config.epochs, epoch_batches)
        samples, started = 0, time.perf_counter()
        batches: Iterator[Batch] = iter(loader)
        try:
            for batch in batches:
                with deferred_interrupts():  # a step and its count go together: exact resume
                    lr = learning_rate(config, progress.epoch, progress.step,
                                       self.warmup_steps)
                    loss = self._step(network, batch, lr)
                    progress.epoch_loss += loss * len(batch)
                    progress.epoch_samples += len(batch)
                    samples += len(batch)
                    progress.batch += 1
                    progress.step += 1
                elapsed = time.perf_counter() - started
                self.reporter.batch_done(loss, lr, samples / max(elapsed, 1e-9))
                self._tell_estimate(epoch_batches - progress.batch)
                self._stop_if_asked()
        except KeyboardInterrupt:
            del batches  # stops the loader's workers before the state is saved
            raise
        mean_loss = progress.epoch_loss / max(progress.epoch_samples, 1)
        return mean_loss, time.perf_counter() - started, samples

    def _step(self, network: nn.Module, batch: Batch, lr: float) -> float:
        fbank = to_device(batch.fbank, self.device)
        target = batch.target.to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seed_step(self.config.seed, self.progress.step, self.ranks.rank, self.device)
        # a Ctrl-C before the update drops the step at the next module (CPU steps are long;
        # not under torchrun, where the ranks must stop at the same step)
        abandon = can_abandon(network, self.device, self.config.compile) and not self.ranks.active
        with abandonable(abandon):
            with torch.autocast(self.device.type, torch.float16, enabled=self.use_amp):
                logits = network(fbank)
                taught = self._teacher_targets(fbank, batch.mix, batch.teacher_input, batch.view)
                loss = distillation_loss(logits.float(), target, taught, self.config.loss,
                                         self.config.kd_lambda)
            finite = bool(torch.isfinite(loss))
            if self.ranks.max(int(not finite)):  # one rank's non-finite loss stops all
                became = loss.item() if not finite else "non-finite in another process"
                raise FastASTError(
                    f"the loss became {became} in epoch {self.progress.epoch + 1} at step "
                    f"{self.progress.step}; training stopped and {self.out / 'last.pt'} keeps "
                    "the last good epoch (try a lower --lr)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.item())

    def _stop_if_asked(self) -> None:
        """Under torchrun: stop every rank here when any rank received a stop request (the
        largest signal number names it), so that none waits in a collective the others left and
        rank 0 saves the state all of them reached. Alone: nothing (stops come as they come)."""
        if self.ranks.active:
            signum = self.ranks.max(self.stops[0] if self.stops else 0)
            if signum:
                raise stop_exception(signum)

    def _plan(self) -> str:
        """The plan line: model, parameters, clips, device."""
        return plan_line(self.config, self.model, train_clips=len(self.train_items),
                         eval_clips=len(self.eval_set), eval_split=self.manifest.selection_split,
                         clip_frames=self.manifest.target_length, device=self.device,
                         steps_per_epoch=self.steps_per_epoch)

    def _tell_estimate(self, left_this_epoch: int) -> None:
        """After the first steps, once: the time the run's remaining steps take."""
        epochs_after = self.config.epochs - self.progress.epoch - 1
        line = self.estimate.step_done(left_this_epoch + epochs_after * self.steps_per_epoch)
        if line is not None:
            self.reporter.note(line)
            if self.estimate.warning:
                self.reporter.note(self.estimate.warning)

    def _teacher_targets(self, fbank: Fbanks, mix: Mix, teacher_input: torch.Tensor | None,
                         view: torch.Tensor) -> torch.Tensor | None:
        """The teacher's predictions ψ(Z_t / τ) [B, C] for this very batch (`Batch`'s fields):
        online; replayed (the stored logits of the batch's views, `view` [B]); or of the cached
        clean clips, mixed as the batch was: λ·p_i + (1-λ)·p_partner (as EfficientAT mixes
        them).

        Online, a teacher reads `teacher_input` when the items carry one (a fixed-length teacher
        of an ElasticAST student: each clip at q = 1 with the student's masks [B, T, F]; a
        teacher with its own front end: the clips' audio [B, samples]), else the student's
        `fbank` (native-length clips go to a native-length teacher as they are).
        """
        if self.teacher is None:
            return None
        config = self.config
        if self.cached_targets is not None:
            return mix.apply(self.cached_targets).to(self.device)
        if self.replayed is not None:
            logits = self.replayed.teacher_logits(view, mix.index, mix.partner, mix.lam)
        else:
            with torch.no_grad():
                logits = self.teacher(to_device(fbank if teacher_input is None else teacher_input,
                                                self.device))
        return teacher_targets(logits.to(self.device), config.loss, config.temperature)

    def _teacher_logits_cache(self) -> torch.Tensor:
        """The teacher's logits of every clean (fixed-length) training clip, once per run."""
        assert self.teacher is not None
        cache = feature_cache_dir(self.config)
        options = {"cache_dir": cache} if cache is not None else {}
        clean = self.manifest.dataset_for("train", self.config.fold, (self.mean, self.std),
                                          **options)
        if self.teacher_view is not None and self.teacher_view.wave is not None:
            self.teacher_view.give(clean)  # its audio; the clean clips are at q = 1 already
        return cached_teacher_logits(
            self.teacher, self.teacher_path, self.out / "teacher_logits.pt", clean,
            [str(entry.wav) for entry in self.train_items.dataset.entries],
            self.batch_size, self.device, self.use_amp, ranks=self.ranks,
            note=self.reporter.note,
        )

    def _replayed_views(self) -> ReplayedViews:
        """The teacher's logits on `teacher_views` augmented views of every training clip, read
        from or written to the run folder's teacher_views.pt (training.teacher)."""
        assert self.teacher is not None
        config, dataset = self.config, self.train_items.dataset
        record = views_record(
            config, file_digest(self.teacher_path), [str(e.wav) for e in dataset.entries],
            self.teacher_view, self.mean, self.std, self.manifest.target_length,
            self.manifest.num_mel_bins)
        return replayed_views(
            self.teacher, views_dataset(dataset, self.teacher_view), config.teacher_views,
            record, self.out / "teacher_views.pt", config.seed, self.batch_size, self.device,
            self.use_amp, ranks=self.ranks, note=self.reporter.note)

    # --- end of epoch ------------------------------------------------------------------------

    def _end_epoch(self, loss: float, seconds: float, samples: int) -> None:
        progress, config = self.progress, self.config
        loss = self.ranks.mean(loss)
        self.ranks.share_buffers(self.model)  # validate and save the model of rank 0
        try:
            metrics = self._evaluate(self.model)
        except NonFiniteScores as error:
            if self.ranks.is_main:
                with deferred_interrupts():
                    self._save_last()
            raise FastASTError(
                f"validation of epoch {progress.epoch + 1} stopped: {error}. The epoch's "
                f"training is saved in {self.out / 'last.pt'} (--resume validates it again)"
            ) from None
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
        """Metrics on the validation split, in float32 as AST validates (AMP is for the
        training steps); each rank of a torchrun job scores its shard."""
        predictions, targets = predict_dataset(model, self.eval_set, self.batch_size,
                                               self.device, collate_fn=self._eval_collate,
                                               ranks=self.ranks)
        names = [str(entry.wav) for entry in self.eval_set.entries]
        return compute_metrics(predictions.numpy(), targets.numpy(), names)

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
        self.ranks.barrier()  # under torchrun the ranks leave once the state is saved
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
