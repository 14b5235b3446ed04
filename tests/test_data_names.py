"""Names from dataset files (CSV columns, list files, links found by walking a folder) never
lead outside their dataset folder: every `prepare` source refuses and lists them."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from data_fixtures import (  # noqa: F401
    make_class_folders,
    make_esc50_tree,
    make_speechcommands_tree,
    no_progress,
    write_audioset_labels,
    write_segments,
    write_tone,
)
from typer.testing import CliRunner

from fastast_cli.data.datafile import read_datafile
from fastast_cli.data.prepare import (
    prepare_audioset,
    prepare_demo,
    prepare_esc50,
    prepare_folder,
    prepare_speechcommands,
)
from fastast_cli.errors import FastASTError


def _snapshot(folder: Path, skip: Path) -> dict[str, str]:
    """sha1 of every file under `folder` except those under `skip` (what prepare may write)."""
    return {
        str(p): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and not p.is_relative_to(skip)
    }


def _all_wavs(out: Path) -> set[Path]:
    """Every wav listed in any datafile of a prepared folder."""
    return {e.wav.resolve() for f in (out / "datafiles").glob("*.json") for e in read_datafile(f)}


def test_resolve_under_refuses_every_way_out(tmp_path: Path) -> None:
    from fastast_cli.data.safepath import resolve_under

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.wav").write_bytes(b"x")
    (root / "link.wav").symlink_to(tmp_path / "outside.wav")
    (root / "dirlink").symlink_to(tmp_path)
    refused = [
        "", ".", "/etc/passwd", "C:/x.wav", "c:x.wav", "../x.wav", "sub/../../x.wav",
        "sub\\..\\..\\x.wav", "link.wav", "dirlink/outside.wav",
    ]
    assert [name for name in refused if resolve_under(root, name) is not None] == []
    assert resolve_under(root, "sub/./a.wav") == (root / "sub" / "a.wav").resolve()
    assert resolve_under(root, "sub\\a.wav") == (root / "sub" / "a.wav").resolve()


@pytest.fixture()
def victim(tmp_path: Path) -> Path:
    """A user's 44.1-kHz recording outside every dataset and output folder."""
    return write_tone(tmp_path / "home" / "victim.wav", sample_rate=44100, seconds=0.3)


def test_esc50_meta_names_cannot_read_or_write_outside(tmp_path: Path, victim: Path) -> None:
    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=5, per_fold=1)
    (tree / "audio" / "9-1-A-0.wav").symlink_to(victim)
    hostile = [
        "../../../home/victim.wav",  # the audio folder's grand-grandparent: the victim
        str(victim),  # an absolute name
        "9-1-A-0.wav",  # a link out of the dataset
        "../../../home/new/made.wav",
    ]
    with open(tree / "meta" / "esc50.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([name, 1, 0, "dog", "False", 1, "A"] for name in hostile)
    out = tmp_path / "o1" / "o2" / "out"  # deep enough that `..` names stay in tmp_path
    before = _snapshot(tmp_path, out)
    report = prepare_esc50(tree, out)
    assert _snapshot(tmp_path, out) == before  # nothing outside --out changed
    assert not (tmp_path / "home" / "new").exists()
    assert [line.split("\t")[0] for line in report.escaped] == hostile
    assert report.counts["fold1_eval"] == 2 and report.counts["fold1_train"] == 8
    assert victim.resolve() not in _all_wavs(out)
    log = (out / "prepare.log").read_text()
    assert "[refused: names leading outside their dataset folder] 4" in log
    assert str(victim) in log


def test_demo_source_meta_is_checked_too(tmp_path: Path, victim: Path) -> None:
    out = tmp_path / "demo"
    prepare_demo(out, clips_per_class=5)
    meta = out / "source" / "ESC-50-demo" / "meta" / "esc50.csv"
    with open(meta, "a", newline="") as handle:
        csv.writer(handle).writerow([str(victim), 1, 0, "tone", "False", 1, "A"])
    before = _snapshot(tmp_path, out)
    report = prepare_demo(out, clips_per_class=5)  # the demo marker still matches: reused
    assert _snapshot(tmp_path, out) == before
    assert report.escaped == [f"{victim}\t({meta.resolve()})"]
    assert sum(report.counts[f"fold{k}_eval"] for k in range(1, 6)) == 50


def test_speechcommands_lists_and_links_cannot_escape(tmp_path: Path, victim: Path) -> None:
    root = make_speechcommands_tree(tmp_path / "sc")
    (root / "yes" / "ffffffff_nohash_0.wav").symlink_to(victim)
    (root / "_background_noise_" / "linked.wav").symlink_to(victim)
    with open(root / "testing_list.txt", "a") as handle:
        handle.write(f"../home/victim.wav\n{victim}\n")
    report = prepare_speechcommands(root, tmp_path / "out")
    assert sorted(line.split("\t")[0] for line in report.escaped) == sorted(
        ["../home/victim.wav", str(victim), "yes/ffffffff_nohash_0.wav",
         "_background_noise_/linked.wav"]
    )
    assert report.counts == {"train": 9, "valid": 3, "test": 3, "background_noise": 2}
    assert victim.resolve() not in _all_wavs(tmp_path / "out")


def test_audioset_links_out_of_the_audio_dir_are_refused(tmp_path: Path, victim: Path) -> None:
    audio = tmp_path / "audio"
    write_tone(audio / "aaaaaaaaaaa.wav", seconds=0.3)
    (audio / "bbbbbbbbbbb.wav").symlink_to(victim)
    segments = write_segments(
        tmp_path / "balanced_train_segments.csv",
        [("aaaaaaaaaaa", "/m/09x0r"), ("bbbbbbbbbbb", "/m/04rlf"),
         ("../../home/victim", "/m/04rlf"), (str(victim.with_suffix("")), "/m/04rlf")],
    )
    labels = write_audioset_labels(tmp_path / "labels.csv")
    report = prepare_audioset([str(segments)], labels, audio, tmp_path / "out")
    assert report.escaped == [f"bbbbbbbbbbb.wav\t({audio})"]
    assert report.counts == {"train": 1}
    assert len(report.missing) == 3  # YTIDs are looked up, never joined to a path
    assert _all_wavs(tmp_path / "out") == {(audio / "aaaaaaaaaaa.wav").resolve()}


def test_folder_links_out_of_the_source_are_refused(tmp_path: Path, victim: Path) -> None:
    src = make_class_folders(tmp_path / "src", {"a": 5, "b": 5})
    (src / "a" / "linked.wav").symlink_to(victim)
    (src / "home").symlink_to(victim.parent, target_is_directory=True)  # a linked class folder
    report = prepare_folder(src, tmp_path / "out", ratios=(1.0, 0.0, 0.0))
    assert sorted(line.split("\t")[0] for line in report.escaped) == [
        "a/linked.wav", "home/victim.wav"
    ]
    assert report.counts == {"train": 10}
    assert victim.resolve() not in _all_wavs(tmp_path / "out")


def test_a_linked_output_folder_is_refused(tmp_path: Path) -> None:
    src = make_class_folders(tmp_path / "src", {"a": 2, "b": 2})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "audio_16k").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FastASTError, match="audio_16k is a symbolic link"):
        prepare_folder(src, tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_files_by_prepares_names_that_it_did_not_write_are_never_overwritten(
    tmp_path: Path,
) -> None:
    """A manifest.yaml (or log, labels CSV) of someone else's at --out is refused before any
    work; a folder an earlier prepare wrote, even one that only got as far as its log, is
    prepared again."""
    from fastast_cli.cli import app

    src = make_class_folders(tmp_path / "src", {"a": 2, "b": 2})
    out = tmp_path / "out"
    out.mkdir()
    for name in ("manifest.yaml", "class_labels_indices.csv"):
        (out / name).write_text("mine\n")
        with pytest.raises(FastASTError, match=f"holds {name}, not written by fastast prepare"):
            prepare_folder(src, out)
        assert sorted(path.name for path in out.iterdir()) == [name]
        assert (out / name).read_text() == "mine\n"
        (out / name).unlink()
    (out / "prepare.log").write_text("mine\n")
    result = CliRunner().invoke(app, ["prepare", "folder", "--src", str(src), "--out", str(out)])
    assert result.exit_code == 2 and "holds prepare.log" in result.output
    assert (out / "prepare.log").read_text() == "mine\n"
    (out / "prepare.log").write_text("# fastast prepare folder — an earlier run that failed\n")
    assert prepare_folder(src, out).counts["train"] > 0  # its own log: a re-run
    assert prepare_folder(src, out).reused == 4  # its own manifest and state: a re-run


def test_cli_warns_about_refused_names(tmp_path: Path, victim: Path) -> None:
    from fastast_cli.cli import app

    tree = make_esc50_tree(tmp_path / "src", classes=2, folds=2, per_fold=1)
    with open(tree / "meta" / "esc50.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([str(victim), 1, 0, "dog", "False", 1, "A"])
    result = CliRunner().invoke(
        app, ["prepare", "esc50", "--src", str(tree), "--out", str(tmp_path / "o"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "1 names refused: they lead outside their dataset folder" in result.stderr


def test_datafile_names_only_ever_key_the_cache(tmp_path: Path, victim: Path) -> None:
    """Absolute and `..` wav names in a datafile are read (AST datafiles use them) but nothing
    is written from them: cache entries are named by a hash, under the cache folder."""
    import json

    from fastast_cli.data.dataset import ASTDataset

    data = tmp_path / "data"
    data.mkdir()
    for name, wav in (("relative", "../home/victim.wav"), ("absolute", str(victim))):
        (data / f"{name}.json").write_text(json.dumps({"data": [{"wav": wav, "labels": "/m/a"}]}))
    (data / "labels.csv").write_text("index,mid,display_name\n0,/m/a,a\n")
    before = _snapshot(tmp_path, tmp_path / "cache")
    for name in ("relative", "absolute"):  # one clip may be listed once per datafile
        dataset = ASTDataset(data / f"{name}.json", data / "labels.csv", target_length=32,
                             mean=0.0, std=1.0, mixup=1.0, training=True,
                             cache_dir=tmp_path / "cache")
        assert dataset[0][0].shape == (32, 128)
    assert _snapshot(tmp_path, tmp_path / "cache") == before
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [len(p.stem) for p in cached] == [40]  # both names are one file: one sha1 entry


def test_speechcommands_and_audioset_runs_into_their_source_repeat(tmp_path: Path) -> None:
    for where in ("prepared", "."):
        root = make_speechcommands_tree(tmp_path / f"sc{len(where)}")
        write_tone(root / "no" / "cafe0000_nohash_0.wav", sample_rate=8000, seconds=0.2)
        first, again = (prepare_speechcommands(root, root / where) for _ in range(2))
        assert first.counts == again.counts == {
            "train": 10, "valid": 3, "test": 3, "background_noise": 2
        }
        assert first.converted == 1 and again.reused == 18

    audio = tmp_path / "audio"
    write_tone(audio / "aaaaaaaaaaa.wav", sample_rate=8000, seconds=0.3)  # converted
    segments = write_segments(tmp_path / "train.csv", [("aaaaaaaaaaa", "/m/09x0r")])
    labels = write_audioset_labels(tmp_path / "labels.csv")
    for _ in range(2):
        report = prepare_audioset([str(segments)], labels, audio, audio / "out")
        wavs = _all_wavs(audio / "out")
        assert report.counts == {"train": 1} and report.escaped == []
    assert wavs == {(audio / "out" / "audio_16k" / "aaaaaaaaaaa.wav").resolve()}
