"""Where a checkpoint's training data came from, and teachers that may teach a run.

Every checkpoint records the dataset's identity (`Manifest.identity`) and the cross-validation
fold it was trained on. In k-fold cross-validation a teacher trained for another fold has seen
this fold's evaluation clips in training: distilling from it leaks the test fold into the student
and inflates the cross-validated result. Such teachers are refused; a `{fold}` in the teacher's
path picks the teacher of the run's own fold.
"""

from __future__ import annotations

from typing import Any

from fastast_cli.data.manifest import Manifest
from fastast_cli.errors import FastASTError

FOLD_FIELD = "{fold}"


def data_record(manifest: Manifest, fold: int | None) -> dict[str, Any]:
    """Checkpoint metadata naming the training data: dataset identity and fold."""
    return {"data_identity": manifest.identity, "fold": manifest.resolved_fold(fold)}


def teacher_path(pattern: str, manifest: Manifest, fold: int | None) -> str:
    """The teacher checkpoint of this run: `{fold}` replaced by the run's fold."""
    if FOLD_FIELD not in pattern:
        return pattern
    number = manifest.resolved_fold(fold)
    if number is None:
        raise FastASTError(
            f"the teacher checkpoint {pattern} holds {{fold}}, but {manifest.path} has no folds"
        )
    return pattern.replace(FOLD_FIELD, str(number))


def check_teacher_data(
    meta: dict[str, Any], path: str, manifest: Manifest, fold: int | None
) -> str | None:
    """Refuse a teacher trained on another fold (or another partition) of a cross-validation
    dataset. Returns a warning when the teacher does not say what it was trained on."""
    if not manifest.folds:
        identity = meta.get("data_identity")
        if identity is not None and identity != manifest.identity:
            return (f"the teacher {path} was trained on other data ({identity}) than "
                    f"{manifest.path} ({manifest.identity})")
        return None
    number = manifest.resolved_fold(fold)
    if "fold" not in meta or "data_identity" not in meta:
        return (f"the teacher {path} does not record its dataset and fold: make sure it never "
                f"trained on fold {number}'s evaluation clips")
    if meta["data_identity"] != manifest.identity:
        raise FastASTError(
            f"the teacher {path} was trained on another preparation of the data "
            f"({meta['data_identity']}, here {manifest.identity}): its folds may hold this "
            "fold's evaluation clips; train the teacher on this dataset"
        )
    if meta["fold"] != number:
        raise FastASTError(
            f"the teacher {path} was trained for fold {meta['fold']}, so it has seen fold "
            f"{number}'s evaluation clips: use the fold-{number} teacher (a teacher path with "
            "{fold}, e.g. runs/esc50-cnn-teacher-fold{fold}/last.pt, picks it)"
        )
    return None
