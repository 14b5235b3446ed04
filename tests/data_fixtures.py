"""Fixture builders for the data tests: tiny audio files in the real dataset layouts.

Everything is generated on the fly (short tones), so the tests need no download.
"""

from __future__ import annotations

import csv
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fastast_cli.progress import set_progress


@pytest.fixture(autouse=True)
def no_progress() -> Iterator[None]:
    """Progress bars off in tests (import this fixture into a test module to use it)."""
    set_progress(False)
    yield
    set_progress(True)


def tone(seconds: float, sample_rate: int, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine plus a little noise, float32 `[samples]`, peak ≈ 0.5."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


def write_tone(
    path: Path,
    *,
    sample_rate: int = 16000,
    seconds: float = 0.5,
    freq: float = 440.0,
    channels: int = 1,
    subtype: str = "PCM_16",
    fmt: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tone file (any rate, channels, subtype, format); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = tone(seconds, sample_rate, freq, seed)
    data = (
        np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)], axis=1)
        if channels > 1
        else wave
    )
    sf.write(str(path), data, sample_rate, subtype=subtype, format=fmt)
    return path


ESC_CATEGORIES = ["dog", "rooster", "pig", "cow"]


def make_esc50_tree(
    parent: Path,
    *,
    classes: int = 4,
    folds: int = 5,
    per_fold: int = 2,
    sample_rate: int = 44100,
    seconds: float = 0.3,
) -> Path:
    """`parent/ESC-50-master` with audio/*.wav (44.1 kHz) and meta/esc50.csv; returns it."""
    root = parent / "ESC-50-master"
    rows = []
    for target in range(classes):
        for fold in range(1, folds + 1):
            for take in range(per_fold):
                src = 1000 + target * 100 + fold * 10 + take
                name = f"{fold}-{src}-{'AB'[take % 2]}-{target}.wav"
                write_tone(
                    root / "audio" / name,
                    sample_rate=sample_rate,
                    seconds=seconds,
                    freq=200 + 300 * target,
                    seed=src,
                )
                rows.append(
                    [
                        name,
                        fold,
                        target,
                        ESC_CATEGORIES[target % 4] + str(target // 4 or ""),
                        "False",
                        str(src),
                        "AB"[take % 2],
                    ]
                )
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def zip_tree(folder: Path, archive: Path) -> Path:
    """Zip `folder` with its own name as the top-level entry (like ESC-50-master.zip)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def tar_tree(folder: Path, archive: Path) -> Path:
    """tar.gz the *contents* of `folder` (like speech_commands_v0.02.tar.gz: no top folder)."""
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(folder.iterdir()):
            tf.add(path, arcname=f"./{path.name}")
    return archive


SC_WORDS = ("yes", "no", "marvin")


def make_speechcommands_tree(
    root: Path, words: tuple[str, ...] = SC_WORDS, per_word: int = 5
) -> Path:
    """Speech Commands layout: word folders, the two lists (one missing entry), noise folder."""
    valid, test = [], []
    for w, word in enumerate(words):
        for i in range(per_word):
            rel = f"{word}/{i:08x}_nohash_{i}.wav"
            write_tone(root / rel, seconds=0.2, freq=300 + 100 * w + 10 * i, seed=w * 100 + i)
            if i == 0:
                valid.append(rel)
            elif i == 1:
                test.append(rel)
    test.append(f"{words[0]}/deadbeef_nohash_0.wav")  # listed, but not in the archive
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    for n in range(2):
        write_tone(root / "_background_noise_" / f"noise_{n}.wav", seconds=1.0, seed=900 + n)
    (root / "README.md").write_text("speech commands fixture\n")
    return root


AUDIOSET_LABELS = [
    ("/m/09x0r", "Speech"),
    ("/m/05zppz", "Male speech, man speaking"),
    ("/m/04rlf", "Music"),
    ("/m/0jbk", "Animal"),
]


def write_audioset_labels(path: Path) -> Path:
    """A small class_labels_indices.csv (quoted names with commas, as in the real file)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "mid", "display_name"])
        for i, (mid, name) in enumerate(AUDIOSET_LABELS):
            writer.writerow([i, mid, name])
    return path


def write_segments(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A segment CSV with AudioSet's 3 comment lines; rows are (YTID, "mid1,mid2")."""
    lines = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=4, "
        "num_positive_labels=9",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    lines += [f'{ytid}, 30.000, 40.000, "{mids}"' for ytid, mids in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_class_folders(root: Path, classes: dict[str, int], seconds: float = 0.5) -> Path:
    """root/<class>/clip_<i>.wav, `classes` = {name: number of clips}."""
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write_tone(
                root / name / f"clip_{i:02d}.wav",
                seconds=seconds,
                freq=250 + 200 * c,
                seed=c * 100 + i,
            )
    return root


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves the server's `files` by URL path, honouring `Range: bytes=N-` when enabled."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        data = server.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        if wanted and server.honor_range:  # type: ignore[attr-defined]
            start = int(wanted.split("=")[1].split("-")[0])
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextmanager
def http_server(files: dict[str, bytes], honor_range: bool = True) -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1 (random port); `.requests` logs (path, Range header)."""
    with local_server(_RangeHandler, files=files, requests=[], honor_range=honor_range) as server:
        yield server


@contextmanager
def local_server(handler: type, **attributes: object) -> Iterator[ThreadingHTTPServer]:
    """`handler` served on 127.0.0.1 (random port) in a thread, with `attributes` set on the
    server for the handler to read; shut down on leaving."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: ThreadingHTTPServer, path: str) -> str:
    """http://127.0.0.1:<port><path>"""
    return f"http://127.0.0.1:{server.server_address[1]}{path}"
