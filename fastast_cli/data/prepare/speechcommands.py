"""Speech Commands V2: the official train/valid/test split and AST's 35 labels.

Layout: one folder per word, `validation_list.txt` and `testing_list.txt` (paths like
`right/bb05582b_nohash_3.wav`), `_background_noise_/`. Valid/test are those lists; train is
every other clip. The background-noise recordings are kept out of the splits and listed in
`datafiles/background_noise.json` (manifest extra `background_noise`) for noise augmentation.
"""

from __future__ import annotations

from pathlib import Path

from fastast_cli.data.audio import AUDIO_EXTENSIONS
from fastast_cli.data.prepare.conversion import Clip, process_clips, sum_stats
from fastast_cli.data.prepare.outputs import finish, write_labels, write_split
from fastast_cli.data.prepare.sources import resolve_source
from fastast_cli.data.prepare.workspace import PrepareReport, Workspace, written_by_prepare
from fastast_cli.data.safepath import resolve_under
from fastast_cli.errors import FastASTError

SPEECHCOMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SPEECHCOMMANDS_CHECKSUM = "sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SPEECHCOMMANDS_TARGET_LENGTH = 128
VALID_LIST, TEST_LIST, NOISE_DIR = "validation_list.txt", "testing_list.txt", "_background_noise_"
WHAT = "Speech Commands V2 (speech_commands_v0.02.tar.gz or its extracted folder)"

# AST's index order of the 35 words.
SPEECHCOMMANDS_LABELS = (
    "backward",
    "follow",
    "five",
    "bed",
    "zero",
    "on",
    "learn",
    "two",
    "house",
    "tree",
    "dog",
    "stop",
    "seven",
    "eight",
    "down",
    "six",
    "forward",
    "cat",
    "right",
    "visual",
    "four",
    "wow",
    "no",
    "nine",
    "off",
    "three",
    "left",
    "marvin",
    "yes",
    "up",
    "sheila",
    "happy",
    "bird",
    "go",
    "one",
)


def speechcommands_mid(index: int) -> str:
    """Speech Commands label mid as in AST's labels CSV: `/m/spcmd00` … `/m/spcmd34`."""
    return f"/m/spcmd{index:02d}"


def read_list(path: Path, workspace: Workspace) -> set[str]:
    """Relative clip paths listed in a split file (posix separators); names that lead outside
    the dataset folder are refused."""
    listed = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.strip().replace("\\", "/")
        if not name:
            continue
        if resolve_under(path.parent, name) is None:
            workspace.refuse(name, path)
        else:
            listed.add(name)
    return listed


def word_clips(root: Path, workspace: Workspace) -> list[str]:
    """Relative paths `word/file.wav` of every clip in a word folder, sorted; files or word
    folders that are links out of `root` are refused, prepare's own output is no word."""
    words = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(("_", "."))
        and p.resolve() != workspace.out
        and not written_by_prepare(workspace.out, p)
    )
    unknown = [w for w in words if w not in SPEECHCOMMANDS_LABELS]
    if unknown:
        raise FastASTError(
            f"{root}: folders {', '.join(unknown)} are not Speech Commands V2 words; expected "
            f"only the 35 words ({', '.join(SPEECHCOMMANDS_LABELS[:5])}, ...) and {NOISE_DIR}"
        )
    clips = [
        f"{w}/{f.name}"
        for w in words
        for f in sorted((root / w).iterdir())
        if f.suffix.lower() in AUDIO_EXTENSIONS
    ]
    return [name for name in clips if _inside(root, name, workspace)]


def _inside(root: Path, name: str, workspace: Workspace) -> bool:
    """Whether `root/name` stays in `root` once links are followed (else it is refused)."""
    if resolve_under(root, name) is None:
        workspace.refuse(name, root)
        return False
    return True


def prepare_speechcommands(
    src: Path | None,
    out: Path,
    *,
    download: bool = False,
    url: str = SPEECHCOMMANDS_URL,
    checksum: str | None = None,
    target_length: int = SPEECHCOMMANDS_TARGET_LENGTH,
) -> PrepareReport:
    """Prepare Speech Commands V2 from `src` (tar.gz or folder) into `out`.

    `checksum` is checked as `resolve_source` says (the official one for a download).
    """
    workspace = Workspace.open(out, "speechcommands", target_length)
    root = resolve_source(
        src,
        workspace,
        required=[VALID_LIST, TEST_LIST],
        what=WHAT,
        url=url,
        checksum=checksum,
        official_checksum=SPEECHCOMMANDS_CHECKSUM,
        archive_name="speech_commands_v0.02.tar.gz",
        fetch=download,
    )
    valid, test = read_list(root / VALID_LIST, workspace), read_list(root / TEST_LIST, workspace)
    found = word_clips(root, workspace)
    workspace.report.missing.extend(str(root / p) for p in sorted((valid | test) - set(found)))
    index = {word: i for i, word in enumerate(SPEECHCOMMANDS_LABELS)}
    split_of = {p: "valid" if p in valid else "test" if p in test else "train" for p in found}
    clips = [
        Clip(root / p, [speechcommands_mid(index[p.split("/")[0]])], p, split_of[p] == "train")
        for p in found
    ]
    noise_files = sorted((root / NOISE_DIR).glob("*.wav")) if (root / NOISE_DIR).is_dir() else []
    noise_names = [f"{NOISE_DIR}/{f.name}" for f in noise_files]
    noise_clips = [Clip(root / n, [], n) for n in noise_names if _inside(root, n, workspace)]
    results = process_clips(clips, workspace)
    noise_results = process_clips(noise_clips, workspace, "background noise")
    absent = [w for w in SPEECHCOMMANDS_LABELS if not any(p.startswith(f"{w}/") for p in found)]
    if absent:
        workspace.report.notes.append(f"no clips for {len(absent)} labels: {', '.join(absent)}")
    labels = write_labels(
        workspace, [speechcommands_mid(i) for i in range(len(index))], list(SPEECHCOMMANDS_LABELS)
    )
    positions = {
        name: [i for i, p in enumerate(found) if split_of[p] == name]
        for name in ("train", "valid", "test")
    }
    splits = {
        name: write_split(workspace, name, clips, results, pos) for name, pos in positions.items()
    }
    noise = write_split(
        workspace, "background_noise", noise_clips, noise_results, range(len(noise_clips))
    )
    mean, std = sum_stats(workspace, results, positions["train"])
    return finish(
        workspace,
        labels=labels,
        splits=splits,
        mean=mean,
        std=std,
        recipe="speechcommands",
        extras={"background_noise": noise},
    )
