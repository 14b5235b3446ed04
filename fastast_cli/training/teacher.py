"""The frozen teacher of `distill`: loading it, checking that it fits the student's data, what
view of each training item it reads, and its logits computed ahead of training and kept in the
run folder: of the clean clips (`teacher_logits: cached`) or of K augmented views per clip
replayed in training (`teacher_views: K`)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fastast_cli.atomic import atomic_path
from fastast_cli.data.download import file_digest as hex_digest
from fastast_cli.data.elastic_features import collate_native
from fastast_cli.data.manifest import Manifest
from fastast_cli.distributed import Ranks
from fastast_cli.errors import CheckpointError, FastASTError
from fastast_cli.evaluation.predict import predict_dataset
from fastast_cli.models.checkpoints.files import existing_path
from fastast_cli.models.checkpoints.passt import read_passt_weights
from fastast_cli.models.classifiers import build_classifier, load_classifier, model_kind
from fastast_cli.training.config import TrainConfig
from fastast_cli.training.provenance import check_teacher_data, teacher_path
from fastast_cli.training.sampling import view_item

Note = Callable[[str], None]
VIEWS_FORMAT = 1  # of teacher_views.pt


@dataclass(frozen=True)
class TeacherView:
    """What a training item carries for its teacher besides the student's input (the last field
    of the item): the clip at q = 1 padded or cut to `frames` (a fixed-length teacher of a
    native-length student), or its audio at (rate, samples) (a teacher with its own front end).
    """

    frames: int | None = None
    wave: tuple[int, int] | None = None

    def give(self, dataset: Dataset) -> Dataset:
        """`dataset` set to end its items with this view (in place; returned)."""
        if self.frames is not None:
            dataset.teacher_length = self.frames  # type: ignore[attr-defined]
        if self.wave is not None:
            dataset.teacher_wave = self.wave  # type: ignore[attr-defined]
        return dataset


def teacher_view(teacher: nn.Module | None, student: nn.Module) -> TeacherView | None:
    """The view `teacher` reads of the student's items; None when it reads the student's own
    input (or there is no teacher)."""
    if teacher is None:
        return None
    spec = teacher.input_spec()
    if spec.waveform_rate is not None:
        return TeacherView(wave=(spec.waveform_rate, spec.waveform_samples()))
    if student.input_spec().native_length and not spec.native_length:
        return TeacherView(frames=spec.teacher_frames())
    return None


def load_teacher(path: str, kind: str, manifest: Manifest, fold: int | None, mean: float,
                 device: torch.device, note: Note) -> tuple[nn.Module, str]:
    """The teacher in `path`, frozen and in eval mode, and its kind. With `kind` "auto" the
    kind is the checkpoint's; a kind that was given must be the checkpoint's. A PaSST state
    dict (a released PaSST) teaches as released: on its own 32-kHz front end."""
    try:
        teacher = load_classifier(path, device=device)
    except CheckpointError as error:
        teacher = released_passt(path, manifest, error)
        teacher.to(device)
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


def released_passt(path: str, manifest: Manifest, error: CheckpointError) -> nn.Module:
    """A PaSST teacher from a PaSST state dict (e.g. `passt-s-f128-p16-s10-ap.476-swa.pt`), on
    PaSST's own front end; `error` (why `path` is no fastast checkpoint) is raised when the
    file is no PaSST state dict either. Its head must already predict the dataset's classes."""
    try:
        weights = read_passt_weights(path)
    except (CheckpointError, FastASTError):
        raise error from None
    classes = len(manifest.label_names)
    if weights.config.num_classes != classes:
        raise FastASTError(
            f"the PaSST weights {path} predict {weights.config.num_classes} classes, "
            f"{manifest.path} has {classes}: fine-tune them first (train-teacher --model passt "
            f"--pretrained {path})")
    return build_classifier("passt", manifest.label_names,
                            target_length=weights.config.target_length,
                            num_mel_bins=weights.config.num_mel_bins, pretrained=path,
                            front_end="passt")


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


def check_teacher_input(teacher: nn.Module, path: str, manifest: Manifest, mean: float,
                        note: Note) -> None:
    """The teacher must read the dataset's frames × mel bins (as its `input_spec()` says, for
    every kind: a CNN's come from its checkpoint's meta; a teacher with its own front end reads
    audio) and predict its labels; other normalization stats only earn a warning."""
    spec = teacher.input_spec()
    if spec.waveform_rate is None and (spec.target_length, spec.num_mel_bins) != (
            manifest.target_length, manifest.num_mel_bins):
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


def file_digest(path: str | Path) -> str:
    """SHA-256 of a teacher checkpoint (a Hub id: its cached copy): a file's bytes, or for a
    folder the digest of its files' names and digests in name order. Caches of its logits name
    it."""
    root = existing_path(path).resolve()
    if not root.is_dir():
        return f"sha256:{hex_digest(root, 'sha256')}"
    files = [f"{file.relative_to(root).as_posix()}:{hex_digest(file, 'sha256')}"
             for file in sorted(root.rglob("*")) if file.is_file()]
    return f"sha256:{hashlib.sha256(chr(10).join(files).encode()).hexdigest()}"


class TeacherInputs(Dataset):
    """What the teacher reads of each item of `dataset`, with the item's mixup partner and λ:
    `(input, [partner, λ])`. The input is the item's teacher view (its last field) when the
    dataset gives one, else the student's own input. With `view` (and `seed`) set, item i is
    its replayed view `view` (training.sampling.view_item), augmented exactly as in training.
    """

    def __init__(self, dataset: Dataset, view: int | None = None, seed: int = 0) -> None:
        self.dataset, self.view, self.seed = dataset, view, seed
        self.has_view = (getattr(dataset, "teacher_length", None) is not None
                         or getattr(dataset, "teacher_wave", None) is not None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        item = (self.dataset[index] if self.view is None
                else view_item(self.dataset, self.seed, self.view, index))
        mixed = getattr(self.dataset, "return_mix", False)
        partner, lam = (item[2], item[3]) if mixed else (index, 1.0)
        return (item[-1] if self.has_view else item[0],
                torch.tensor([partner, lam], dtype=torch.float64))


def teacher_logits_of(teacher: nn.Module, inputs: TeacherInputs, batch_size: int,
                      device: torch.device, amp: bool, ranks: Ranks
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's logits [N, C] on every item of `inputs` and their [partner, λ] [N, 2];
    each rank of a torchrun job scores its shard, every rank gets the whole."""
    native = not inputs.has_view and teacher.input_spec().native_length
    dtype = torch.float16 if amp else torch.float32
    return predict_dataset(teacher, inputs, batch_size, device, dtype, ranks=ranks,
                           collate_fn=collate_native if native else None)


def cached_teacher_logits(
    teacher: nn.Module, teacher_path: str, cache: Path, clean: Dataset, clips: list[str],
    batch_size: int, device: torch.device, amp: bool, *, ranks: Ranks, note: Note,
) -> torch.Tensor:
    """Teacher logits [N, C] of every un-augmented training clip (`clean`, named `clips`, with
    the teacher's view when it reads one), read from `cache` when it holds those clips and that
    very teacher file (by its digest; on every rank), else computed (each rank of a torchrun
    job scores its shard) and saved there by the first rank.

    Faster than online teaching, but the student then trains on augmented input against logits
    of the clean clip: consistency under augmentation is lost (CMKD's finding is that consistent
    teaching works better; `teacher_views` keeps it at cached cost).
    """
    source = file_digest(teacher_path)  # retrained → recomputed
    logits = read_cached_logits(cache, clips, source)
    if all(ranks.gather(logits is not None)):  # all ranks or none compute them
        return logits  # type: ignore[return-value]
    note("computing the teacher's logits once (teacher_logits: cached)")
    logits, _ = teacher_logits_of(teacher, TeacherInputs(clean), batch_size, device, amp, ranks)
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


@dataclass
class ReplayedViews:
    """The teacher's logits on K augmented views of every training clip (CED's consistent
    teaching at cached cost): `logits` [K, N, C], and the mixup `partner` [K, N] and `lam`
    [K, N] of each view (its whole augmentation follows from `view_seed`; these two are checked
    on every replay). `record` names what made them: the teacher file's digest, the clips and
    every setting that shapes an item."""

    record: dict[str, Any]
    logits: torch.Tensor
    partner: torch.Tensor
    lam: torch.Tensor

    def teacher_logits(self, view: torch.Tensor, index: torch.Tensor, partner: torch.Tensor,
                       lam: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of the replayed items (`view`, clip `index`: [B]); refuses items whose
        mixup differs from the stored view's (a changed dataset)."""
        if not (torch.equal(self.partner[view, index], partner.long())
                and torch.allclose(self.lam[view, index], lam.double())):
            raise FastASTError("a replayed view is not the view the teacher's logits were "
                               "computed on (the data pipeline changed): delete "
                               "teacher_views.pt in the run folder and resume")
        return self.logits[view, index]


def views_record(config: TrainConfig, teacher_digest: str, clips: list[str],
                 view: TeacherView | None, mean: float, std: float,
                 target_length: int, num_mel_bins: int) -> dict[str, Any]:
    """What the replayed views depend on: a cache with another record is stale."""
    shaping = ("seed", "freqm", "timem", "mixup", "noise", "fold", "elastic", "resolutions",
               "resolution_sampling")
    return {"format": VIEWS_FORMAT, "teacher": teacher_digest, "clips": clips,
            "augmentation": {key: getattr(config, key) for key in shaping},
            "input": {"mean": mean, "std": std, "target_length": target_length,
                      "num_mel_bins": num_mel_bins,
                      "teacher_view": None if view is None else [view.frames, view.wave]}}


def replayed_views(
    teacher: nn.Module, dataset: Dataset, views: int, record: dict[str, Any], cache: Path,
    seed: int, batch_size: int, device: torch.device, amp: bool, *, ranks: Ranks, note: Note,
) -> ReplayedViews:
    """The teacher's logits on `views` augmented views of every item of `dataset` (the training
    set, giving the teacher's view when it reads one), kept in `cache` (the run folder's
    teacher_views.pt): read when its `record` matches, else computed view by view, the file
    rewritten after each, so an interrupted run resumes from the views done. A file of another
    teacher, other clips or other augmentation settings is stale and rebuilt."""
    done = read_views(cache, record)  # every rank reads it (one shared run folder)
    if done is None and cache.exists():
        note(f"{cache.name} was made by another teacher, other clips or other augmentation "
             "settings: rebuilding it")
    agreed = min(ranks.gather(0 if done is None else len(done.logits)))
    logits, partner, lam = ([], [], []) if done is None else (
        list(done.logits[:agreed]), list(done.partner[:agreed]), list(done.lam[:agreed]))
    for view in range(len(logits), views):
        note(f"teacher_views: the teacher's logits on view {view + 1} of {views} of every clip")
        view_logits, mixes = teacher_logits_of(teacher, TeacherInputs(dataset, view, seed),
                                               batch_size, device, amp, ranks)
        logits.append(view_logits)
        partner.append(mixes[:, 0].long())
        lam.append(mixes[:, 1])
        stored = ReplayedViews(record, torch.stack(logits), torch.stack(partner),
                               torch.stack(lam))
        if ranks.is_main:
            with atomic_path(cache) as temporary:
                torch.save({"record": record, "logits": stored.logits,
                            "partner": stored.partner, "lam": stored.lam}, temporary)
    return ReplayedViews(record, torch.stack(logits)[:views], torch.stack(partner)[:views],
                         torch.stack(lam)[:views])


def read_views(cache: Path, record: dict[str, Any]) -> ReplayedViews | None:
    """The views stored in `cache` when it was made for `record`; None when it is missing,
    damaged, or stale."""
    try:
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("record") == record:
            return ReplayedViews(record, saved["logits"], saved["partner"], saved["lam"])
    except Exception:
        pass
    return None


def views_dataset(dataset: Dataset, view: TeacherView | None) -> Dataset:
    """A copy of the training set that ends its items with the teacher's view (training itself
    replays without computing it)."""
    return view.give(copy.copy(dataset)) if view is not None else dataset
