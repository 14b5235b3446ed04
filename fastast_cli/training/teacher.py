"""The frozen teacher of `distill`: loading it, checking that it fits the student's data, and
its logits of the clean training clips, computed once and kept on disk (`teacher_logits:
cached`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from fastast_cli.atomic import atomic_path
from fastast_cli.data.manifest import Manifest
from fastast_cli.distributed import Ranks
from fastast_cli.errors import FastASTError
from fastast_cli.evaluation.predict import predict_dataset
from fastast_cli.models.checkpoints.files import existing_path
from fastast_cli.models.classifiers import load_classifier, model_kind
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.provenance import check_teacher_data, teacher_path

Note = Callable[[str], None]


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


def load_teacher(path: str, kind: str, manifest: Manifest, fold: int | None, mean: float,
                 device: torch.device, note: Note) -> tuple[nn.Module, str]:
    """The teacher in `path`, frozen and in eval mode, and its kind. With `kind` "auto" the
    kind is the checkpoint's; a kind that was given must be the checkpoint's."""
    teacher = load_classifier(path, device=device)
    found = model_kind(teacher)
    if kind not in ("auto", found):
        raise FastASTError(
            f"--teacher {kind} but {path} holds a {found} model: give --teacher {found}, or "
            "leave --teacher out to use the checkpoint's"
        )
    note(f"teacher: {found} from {path}")
    warning = check_teacher_data(teacher.meta, path, manifest, fold)
    if warning is not None:
        note(f"warning: {warning}")
    check_teacher_input(teacher, path, manifest, mean, note)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher, found


def run_teacher(
    config: TrainConfig, manifest: Manifest, mean: float, device: torch.device, note: Note
) -> tuple[nn.Module | None, str, TrainConfig]:
    """The teacher of a run (None without one), its checkpoint's path (for `{fold}`: the run's
    fold), and the run's config naming the teacher's kind (`auto` resolved; `none` without)."""
    if config.teacher_checkpoint is None or config.teacher == "none":
        return None, "", replace(config, teacher="none")
    path = teacher_path(config.teacher_checkpoint, manifest, config.fold)
    teacher, kind = load_teacher(path, config.teacher, manifest, config.fold, mean, device, note)
    return teacher, path, replace(config, teacher=kind)


def teacher_view_frames(teacher: nn.Module | None, student: nn.Module,
                        config: TrainConfig) -> int | None:
    """Frames of the q = 1 view of each clip (same audio, same masks) that the teacher reads,
    padded or cut to its own `teacher_frames()` as AST does: for a fixed-length teacher of a
    native-length student, taught online. None when the teacher reads the student's batch (or
    its logits are cached, or there is none)."""
    if (teacher is None or config.teacher_logits != "online"
            or not student.input_spec().native_length):
        return None
    return teacher.input_spec().teacher_frames()


def check_teacher_input(teacher: nn.Module, path: str, manifest: Manifest, mean: float,
                        note: Note) -> None:
    """The teacher must read the dataset's frames × mel bins (as its `input_spec()` says, for
    every kind: a CNN's come from its checkpoint's meta) and predict its labels; other
    normalization stats only earn a warning."""
    spec = teacher.input_spec()
    if (spec.target_length, spec.num_mel_bins) != (manifest.target_length,
                                                   manifest.num_mel_bins):
        raise FastASTError(
            f"the teacher {path} reads {spec.target_length} frames × {spec.num_mel_bins} bins, "
            f"but {manifest.path} gives {manifest.target_length} × {manifest.num_mel_bins}: train "
            "the teacher on this dataset (train-teacher, or --pretrained to adapt a checkpoint)"
        )
    if teacher.labels and teacher.labels != manifest.label_names:
        raise FastASTError(
            f"the teacher {path} was trained on other labels ({len(teacher.labels)} classes) "
            f"than {manifest.path}"
        )
    teacher_mean = teacher.meta.get("mean")
    if teacher_mean is not None and abs(teacher_mean - mean) > 1e-3:
        note("warning: the teacher was trained with other normalization stats "
             f"(mean {teacher_mean:.3f} vs {mean:.3f}); it sees the student's input")


def cached_teacher_logits(
    teacher: nn.Module, teacher_path: str, cache: Path, clean: Dataset, clips: list[str],
    batch_size: int, device: torch.device, amp: bool, *, ranks: Ranks, note: Note,
) -> torch.Tensor:
    """Teacher logits [N, C] of every un-augmented training clip (`clean`, named `clips`), read
    from `cache` when it holds those clips and that very teacher file (on every rank), else
    computed (each rank of a torchrun job scores its shard) and saved there by the first rank.

    Faster than online teaching, but the student then trains on augmented input against logits
    of the clean clip: consistency under augmentation is lost (CMKD's finding is that consistent
    teaching works better).
    """
    teacher_file = existing_path(teacher_path).resolve()  # a Hub id: its cached copy
    stat = teacher_file.stat()
    source = f"{teacher_file}:{stat.st_size}:{stat.st_mtime_ns}"  # retrained → recomputed
    logits = read_cached_logits(cache, clips, source)
    if all(ranks.gather(logits is not None)):  # all ranks or none compute them
        return logits  # type: ignore[return-value]
    note("computing the teacher's logits once (teacher_logits: cached)")
    logits, _ = predict_dataset(teacher, clean, batch_size, device, amp, ranks=ranks)
    if ranks.is_main:
        with atomic_path(cache) as temporary:
            torch.save({"clips": clips, "teacher": source, "logits": logits}, temporary)
    return logits


def read_cached_logits(cache: Path, clips: list[str], source: str) -> torch.Tensor | None:
    """The logits [N, C] saved in `cache` for these `clips` by the teacher file `source`; None
    when the file is missing, damaged by an interruption, or of other clips or another teacher."""
    try:
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("clips") == clips and saved.get("teacher") == source:
            return saved["logits"]
    except Exception:
        pass
    return None
