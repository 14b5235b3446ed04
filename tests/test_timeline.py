"""Long recordings: timelines, events, block-wise scoring in constant memory, stdin streams,
and progress lines in logs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from fastast_cli import build_model
from fastast_cli.cli import app
from fastast_cli.data.audio import (
    AudioReadError,
    StreamResampler,
    open_stream,
    read_blocks,
    resample,
)
from fastast_cli.data.features import fbank, normalize
from fastast_cli.inference.clips import WindowRow, load_predictor
from fastast_cli.inference.stream import WindowPlan
from fastast_cli.inference.timeline import find_events, load_thresholds
from fastast_cli.models.checkpoints import save_checkpoint
from fastast_cli.models.elastic import build_elastic
from fastast_cli.progress import Task, set_progress

LABELS = ["dog", "rain", "siren", "speech", "engine"]
WINDOW = 64  # frames of the tiny test models (0.64 s)
RATE = 16000

pytestmark = pytest.mark.usefixtures("one_thread")


def noise(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Noise with a slow tone, [samples] or [samples, channels] (soundfile's layout), float32."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * rate)
    time = np.arange(samples) / rate
    wave = 0.2 * np.sin(2 * np.pi * 440 * time * (1 + time / 10)) + 0.05 * rng.standard_normal(
        samples)
    if channels == 1:
        return wave.astype(np.float32)
    return (wave[:, None] * np.linspace(1.0, 0.5, channels)[None, :]).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timeline") / "tiny.pt"
    save_checkpoint(path, build_model("tiny", 5, depth=2, target_length=WINDOW, labels=LABELS),
                    mean=-5.0, std=4.0, loss="ce")
    return path


@pytest.fixture(scope="module")
def elastic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timeline") / "elastic.pt"
    save_checkpoint(path, build_elastic("tiny", 5, depth=2, target_length=WINDOW, labels=LABELS),
                    mean=-5.0, std=4.0, loss="bce")
    return path


def invoke(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(app, ["predict", *args, "--device", "cpu"], input=stdin)


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


# --- windows and timelines -----------------------------------------------------------------


def test_window_plan_last_window_fixed_and_native() -> None:
    fixed, native = WindowPlan(64, 32), WindowPlan(64, 32, native=True)
    assert [(s.start, s.stop) for s in fixed.spans(100)] == [(0, 64), (32, 96), (36, 100)]
    assert [(s.start, s.stop) for s in native.spans(100)] == [(0, 64), (32, 96), (64, 100)]
    assert [(s.start, s.stop) for s in native.spans(40)] == [(0, 40)]
    sparse = WindowPlan(64, 200, native=True)  # the next start (200) lies past the end
    assert [(s.start, s.stop) for s in sparse.spans(150)] == [(0, 64), (86, 150)]
    assert [(s.start, s.stop) for s in sparse.spans(230)] == [(0, 64), (200, 230)]
    for frames in (1, 40, 64, 65, 100, 150, 1000, 1001):
        for plan in (fixed, native, sparse):
            assert plan.count(frames) == len(plan.spans(frames))


def test_timeline_rows_cover_the_file(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    duration = 3.37
    sf.write(wav, noise(duration), RATE, subtype="FLOAT")
    out = tmp_path / "timeline.csv"
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline", str(out),
                    "--hop", "0.32")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["start_s", "end_s", *LABELS]
    starts = [float(row["start_s"]) for row in rows]
    ends = [float(row["end_s"]) for row in rows]
    frames = 1 + (int(duration * RATE) - 400) // 160  # 335
    last_start = (frames - WINDOW) / 100  # the fixed model's last window ends at the end
    assert starts == pytest.approx([0.32 * k for k in range(len(rows) - 1)] + [last_start])
    assert ends[:-1] == pytest.approx([s + 0.64 for s in starts[:-1]])
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(duration)
    assert all(b <= a for a, b in zip(ends, starts[1:], strict=False))  # no gap between rows
    for row in rows:  # softmax scores of a CE checkpoint
        assert sum(float(row[label]) for label in LABELS) == pytest.approx(1.0, abs=1e-4)


def test_window_option_and_plot(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(2.0), RATE)
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline", str(out),
                    "--window", "0.32", "--plot", str(png), "--top-k", "3")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    starts = [float(row["start_s"]) for row in rows]
    assert starts[:3] == pytest.approx([0.0, 0.16, 0.32])  # hop: half the window
    assert float(rows[0]["end_s"]) == pytest.approx(0.32)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in result.stdout
    again = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline", str(out),
                   "--window", "0.32")
    assert again.exit_code == 0 and f"replaced {out}" in again.stdout
    too_long = invoke(str(wav), "--checkpoint", str(checkpoint), "--window", "1.0")
    assert too_long.exit_code == 2 and "--window must lie between" in too_long.stderr
    bad_plot = invoke(str(wav), "--checkpoint", str(checkpoint), "--plot", str(tmp_path / "t.xyz"))
    assert bad_plot.exit_code == 2 and "cannot write .xyz" in bad_plot.stderr


def test_timeline_top_k_columns(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(1.5), RATE)
    out = tmp_path / "top.csv"
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline", str(out),
                    "--timeline-classes", "top", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["start_s", "end_s", "label_1", "score_1", "label_2", "score_2"]
    assert all(float(r["score_1"]) >= float(r["score_2"]) for r in rows)


# --- events ----------------------------------------------------------------------------------


def rows_of(scores: list[list[float]], hop: float = 0.5, window: float = 1.0) -> list[WindowRow]:
    """Constructed timeline rows: window k spans [k·hop, k·hop + window)."""
    return [WindowRow(k, k * hop, k * hop + window, torch.tensor(row))
            for k, row in enumerate(scores)]


def test_overlapping_windows_make_one_event() -> None:
    dog = [0.1, 0.8, 0.9, 0.7, 0.2, 0.2, 0.6, 0.1]
    rain = [0.9, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]  # windows 0 and 2 touch at 1.0 s
    rows = rows_of([[d, r] for d, r in zip(dog, rain, strict=True)])
    events = find_events(rows, torch.tensor([0.5, 0.5]), ["dog", "rain"])
    found = [(e.label, e.onset_s, e.offset_s, e.peak, e.peak_s, e.windows) for e in events]
    assert found == [
        ("rain", 0.0, 2.0, pytest.approx(0.9), 0.5, 2),
        ("dog", 0.5, 2.5, pytest.approx(0.9), 1.5, 3),  # three windows, one event
        ("dog", 3.0, 4.0, pytest.approx(0.6), 3.5, 1),  # starts after the first one ended
    ]


def test_per_class_thresholds_file(tmp_path: Path) -> None:
    spec = tmp_path / "thresholds.json"
    spec.write_text(json.dumps({"rain": 0.95}))
    thresholds = load_thresholds(spec, 0.5, ["dog", "rain"])
    assert thresholds.tolist() == pytest.approx([0.5, 0.95])
    rows = rows_of([[0.9, 0.9], [0.1, 0.1]])
    assert [e.label for e in find_events(rows, thresholds, ["dog", "rain"])] == ["dog"]
    table = tmp_path / "thresholds.csv"
    table.write_text("label,threshold\ndog,0.3\n")
    assert load_thresholds(table, 0.5, ["dog", "rain"]).tolist() == pytest.approx([0.3, 0.5])


def test_events_cli_and_bad_thresholds(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(2.0), RATE)
    out = tmp_path / "events.json"
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--events", str(out),
                    "--threshold", "0.0")
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    # threshold 0: every class is one event over the whole clip
    assert sorted(e["label"] for e in payload["events"]) == sorted(LABELS)
    assert {(e["onset_s"], e["offset_s"]) for e in payload["events"]} == {(0.0, 2.0)}
    assert "Events in" in result.stdout
    for bad in ("1.5", "-0.1", "nan"):
        result = invoke(str(wav), "--checkpoint", str(checkpoint), "--threshold", bad)
        assert result.exit_code == 2 and "--threshold must lie in [0, 1]" in result.stderr
    spec = tmp_path / "bad.json"
    for content, message in (({"dog": 2.0}, "must lie in [0, 1]"), ({"cat": 0.5}, "no class")):
        spec.write_text(json.dumps(content))
        result = invoke(str(wav), "--checkpoint", str(checkpoint), "--events", str(out),
                        "--thresholds", str(spec))
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_no_event_names_the_top_score_and_a_threshold_that_finds_one(
        checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(2.0), RATE)
    out = tmp_path / "events.json"
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--events", str(out),
                    "--threshold", "1.0")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["events"] == []
    hint = re.search(r"no window reached its threshold: the top score was (\d\.\d{4}) "
                     r"\((\S+) at [\d.]+ s, threshold 1\); --threshold (\d\.\d\d) would "
                     r"find it", " ".join(result.stdout.split()))
    assert hint, result.stdout
    top, label, suggested = float(hint[1]), hint[2], float(hint[3])
    assert suggested <= top < suggested + 0.01 + 1e-4 and label in LABELS
    again = invoke(str(wav), "--checkpoint", str(checkpoint), "--events", str(out),
                   "--threshold", hint[3])
    assert again.exit_code == 0
    assert label in {event["label"] for event in json.loads(out.read_text())["events"]}


# --- block-wise scoring ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44100, 8000])
def test_stream_resampler_equals_whole_signal(rate: int) -> None:
    wave = torch.randn(rate * 2 + 77, generator=torch.Generator().manual_seed(rate))
    resampler = StreamResampler(rate, RATE)
    sizes = np.random.default_rng(0).integers(1, 5000, size=100)
    parts, first = [], 0
    for size in sizes:
        parts.append(resampler.push(wave[first : first + size]))
        first += size
    parts.append(resampler.finish())
    torch.testing.assert_close(torch.cat(parts), resample(wave, rate, RATE), atol=2e-6, rtol=0)


@pytest.mark.parametrize("hop", [0.3, 1.0])  # overlapping windows, and gaps between windows
@pytest.mark.parametrize("kind", ["fixed", "elastic"])
def test_blockwise_equals_whole_file(checkpoint: Path, elastic_checkpoint: Path, tmp_path: Path,
                                     kind: str, hop: float) -> None:
    path = checkpoint if kind == "fixed" else elastic_checkpoint
    predictor = load_predictor(path, hop_s=hop, batch_size=3)
    data = noise(4.13, rate=44100, channels=2)
    wav = tmp_path / "stereo.wav"
    sf.write(wav, data, 44100, subtype="FLOAT")
    whole = predictor.score_waveform(data.T, 44100)
    blocks = predictor.score_file(wav, block_s=0.2137)  # many odd-sized blocks
    assert [(r.start_s, r.end_s) for r in blocks.rows] == [(r.start_s, r.end_s) for r in whole.rows]
    torch.testing.assert_close(blocks.window_scores, whole.window_scores, atol=1e-5, rtol=0)
    if kind == "elastic" and hop < 0.64:  # the last window is partial, scored at its length
        last, before = whole.rows[-1], whole.rows[-2]
        assert last.start == before.start + 30 and last.end_s == pytest.approx(4.13)
        mono = resample(torch.from_numpy(data.T.copy()).mean(0), 44100, RATE)
        own = fbank(mono[last.start * 160 :])  # [frames < WINDOW, F]
        assert 16 <= own.shape[0] < WINDOW
        with torch.no_grad():
            expected = predictor.model([normalize(own, -5.0, 4.0)]).sigmoid()[0]
        torch.testing.assert_close(last.scores, expected, atol=1e-5, rtol=0)


def run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_two_hour_file_in_constant_memory(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "two-hours.wav"
    script = f"""
        import json, numpy as np, soundfile as sf, torch
        from fastast_cli.inference.clips import load_predictor
        torch.set_num_threads(1)
        block = (0.05 * np.random.default_rng(0).standard_normal(16000 * 60)).astype("float32")
        with sf.SoundFile("{wav}", "w", 16000, 1, subtype="PCM_16") as out:
            for _ in range(120):  # 2 hours, written a minute at a time
                out.write(block)
        predictor = load_predictor("{checkpoint}", hop_s=600.0)
        predictor.score_waveform(block[:32000], 16000)  # warm up the model

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) / 1024  # MiB
        rss = status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as handle:  # peak RSS := current RSS
            handle.write("5")
        clip = predictor.score_file("{wav}")
        print(json.dumps({{"growth_mib": status("VmHWM:") - rss, "windows": clip.num_windows,
                           "duration": clip.duration_s, "end": clip.rows[-1].end_s}}))
    """
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    decoded_mib = 2 * 3600 * RATE * 4 / 2**20  # 439 MiB of float32 samples
    assert report["duration"] == report["end"] == 7200.0
    assert report["windows"] == 13  # every 10 minutes, plus the one ending at the end
    assert report["growth_mib"] < decoded_mib / 10, report
    print(f"2-hour file: peak RSS growth {report['growth_mib']:.1f} MiB, "
          f"decoded {decoded_mib:.0f} MiB")


# --- standard input --------------------------------------------------------------------------


def test_stdin_wav_streams_json_lines(checkpoint: Path, tmp_path: Path) -> None:
    """A real pipe; stderr is not a terminal, so progress comes as plain lines."""
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(2.5, rate=22050), 22050, subtype="PCM_16")
    result = subprocess.run(
        [sys.executable, "-m", "fastast_cli", "predict", "-", "--checkpoint", str(checkpoint),
         "--device", "cpu", "--timeline-classes", "top", "--top-k", "5"],
        input=wav.read_bytes(), capture_output=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "FASTAST_PROGRESS_INTERVAL": "0"})
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    expected = load_predictor(checkpoint).score_file(wav)
    assert [(x["start_s"], x["end_s"]) for x in lines] == [
        (round(r.start_s, 3), round(r.end_s, 3)) for r in expected.rows]
    for line, row in zip(lines, expected.rows, strict=True):
        scores = {t["label"]: t["score"] for t in line["top"]}
        assert [scores[label] for label in LABELS] == pytest.approx(row.scores.tolist(), abs=1e-5)
    stderr = result.stderr.decode()
    assert "2.5 s of audio in" in stderr and "× real time" in stderr
    progress = [line for line in stderr.splitlines() if line.startswith("scoring stdin: ")]
    assert len(progress) == len(lines)  # interval 0: a line per window, total unknown
    assert progress[-1].startswith(f"scoring stdin: step {len(lines)}, ")
    assert "elapsed" in progress[-1]


def wav_bytes(data: np.ndarray, rate: int, subtype: str, data_size: int | None = None,
              container: str = "WAV", trailer: bytes = b"") -> bytes:
    """A WAV file's bytes; `data_size` replaces the data chunk's size (a header written to a
    pipe before the length was known), `trailer` is appended after the samples."""
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=container, subtype=subtype)
    wav = bytearray(buffer.getvalue())
    if data_size is not None:
        at = wav.index(b"data") + 4
        wav[at : at + 4] = data_size.to_bytes(4, "little")
    return bytes(wav) + trailer


def through_pipe(payload: bytes) -> tuple[np.ndarray, int]:
    """What `open_stream` reads from a real pipe fed `payload`: samples [frames, channels], rate."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        sound, declared = open_stream(read_end, "stdin")
        with sound:
            blocks = list(read_blocks(sound, 1000, "stdin", declared))
            rate = sound.samplerate
    finally:
        writer.join()
        os.close(read_end)
    return np.concatenate(blocks, axis=1).T, rate


SOX_UNKNOWN = 0x7FFFF000  # what `sox -d -t wav -` writes as the data size (whole blocks)


@pytest.mark.parametrize(("subtype", "container", "channels", "size"), [
    ("PCM_16", "WAV", 1, 0),  # a writer that leaves the size at 0
    ("PCM_16", "WAV", 2, 0xFFFFFFFF),  # ffmpeg
    ("PCM_16", "WAV", 3, SOX_UNKNOWN // 6 * 6),  # sox: MS_UNSPEC rounded to 6-byte blocks
    ("PCM_24", "WAVEX", 3, SOX_UNKNOWN // 9 * 9),  # sox, WAVE_FORMAT_EXTENSIBLE above 16 bits
    ("FLOAT", "WAV", 2, 0),  # a float WAV with a PEAK chunk before its data
    ("PCM_U8", "WAV", 2, 0xFFFFFFFF),  # (mono would read the odd size's pad byte as a sample)
])
def test_wav_on_a_pipe_with_unknown_length_reads_to_the_end(subtype: str, container: str,
                                                            channels: int, size: int) -> None:
    data = noise(1.3, rate=22050, channels=channels)
    expected, _ = sf.read(io.BytesIO(wav_bytes(data, 22050, subtype, container=container)),
                          dtype="float32", always_2d=True)
    samples, rate = through_pipe(wav_bytes(data, 22050, subtype, size, container))
    assert rate == 22050 and samples.shape == expected.shape == (int(1.3 * 22050), channels)
    np.testing.assert_array_equal(samples, expected)


def test_wav_on_a_pipe_keeps_its_declared_length_and_other_formats() -> None:
    data = noise(1.0, rate=16000, channels=2)
    trailer = b"LIST" + (10).to_bytes(4, "little") + b"INFOISFT\x02\x00"  # a chunk after the data
    samples, _ = through_pipe(wav_bytes(data, 16000, "PCM_16", trailer=trailer))
    assert samples.shape == (16000, 2)  # the trailing chunk is not read as samples
    np.testing.assert_allclose(samples, data, atol=1 / 32767)
    payload = wav_bytes(data, 16000, "ULAW")  # another encoding: libsndfile reads it, as before
    expected, _ = sf.read(io.BytesIO(payload), dtype="float32", always_2d=True)
    samples, _ = through_pipe(payload)
    np.testing.assert_array_equal(samples, expected)
    with pytest.raises(AudioReadError, match="stdin: cannot decode audio"):
        through_pipe(b"not audio at all")


def test_stdin_wav_header_of_unknown_length_cli(checkpoint: Path, tmp_path: Path) -> None:
    """`sox -d -t wav - | fastast predict -`: the header, written first, cannot know the length."""
    data = noise(2.0, rate=RATE)
    wav = tmp_path / "clip.wav"
    sf.write(wav, data, RATE, subtype="PCM_16")
    result = subprocess.run(
        [sys.executable, "-m", "fastast_cli", "predict", "-", "--checkpoint", str(checkpoint),
         "--device", "cpu", "--quiet"],
        input=wav_bytes(data, RATE, "PCM_16", 0), capture_output=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    expected = load_predictor(checkpoint).score_file(wav)
    got = torch.tensor([[line["scores"][label] for label in LABELS] for line in lines])
    torch.testing.assert_close(got, expected.window_scores, atol=1e-5, rtol=0)
    assert "2.0 s of audio in" in result.stderr.decode()


def test_stdin_raw_pcm(checkpoint: Path, tmp_path: Path) -> None:
    data = noise(1.7, rate=8000, channels=2)
    pcm = np.round(data * 32767).astype("<i2")
    wav = tmp_path / "same.wav"
    sf.write(wav, pcm, 8000, subtype="PCM_16")
    result = invoke("-", "--checkpoint", str(checkpoint), "--rate", "8000", "--channels", "2",
                    stdin=pcm.tobytes())
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = load_predictor(checkpoint).score_file(wav)
    assert len(lines) == expected.num_windows > 2
    got = torch.tensor([[line["scores"][label] for label in LABELS] for line in lines])
    torch.testing.assert_close(got, expected.window_scores, atol=1e-5, rtol=0)


def test_unreadable_stream_keeps_rows(checkpoint: Path, tmp_path: Path) -> None:
    data = noise(3.0)
    data[int(2.0 * RATE):] = np.nan  # decodable header, then samples that are not numbers
    buffer = io.BytesIO()
    sf.write(buffer, data, RATE, format="WAV", subtype="FLOAT")
    out = tmp_path / "timeline.csv"
    result = invoke("-", "--checkpoint", str(checkpoint), "--timeline", str(out),
                    stdin=buffer.getvalue())
    assert result.exit_code == 2
    assert "not finite" in result.stderr and "kept" in result.stderr
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(read_csv(out)) >= 3  # the rows scored before the bad block
    garbage = invoke("-", "--checkpoint", str(checkpoint), stdin=b"not audio at all")
    assert garbage.exit_code == 2 and "stdin: cannot decode audio" in garbage.stderr


def test_stdin_options_checked(checkpoint: Path, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, noise(1.0), RATE)
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--rate", "8000")
    assert result.exit_code == 2 and "standard input" in result.stderr
    result = invoke(str(wav), str(wav), "--checkpoint", str(checkpoint), "--timeline",
                    str(tmp_path / "t.csv"))
    assert result.exit_code == 2 and "one file" in result.stderr
    before = wav.read_bytes()
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline", str(wav))
    assert result.exit_code == 2 and "is an input file" in result.stderr
    assert wav.read_bytes() == before  # the recording is never overwritten
    result = invoke(str(wav), "--checkpoint", str(checkpoint), "--timeline",
                    str(tmp_path / "x.json"), "--events", str(tmp_path / "x.json"))
    assert result.exit_code == 2 and "also the --timeline output" in result.stderr
    result = invoke("-", "--checkpoint", str(checkpoint), "--json", stdin=b"")
    assert result.exit_code == 2 and "JSON lines on stdout already" in result.stderr
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(0, np.float32), RATE, format="WAV")  # a header, no data
    result = invoke("-", "--checkpoint", str(checkpoint), stdin=buffer.getvalue())
    assert result.exit_code == 2 and "no audio samples" in result.stderr
    assert "--rate 16000" in result.stderr


# --- folders and progress lines --------------------------------------------------------------


def test_folder_scored_sorted_with_progress_lines(checkpoint: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.wav", "a.flac", "sub/c.wav"):
        sf.write(folder / name, noise(1.0, seed=len(name)), RATE)
    (folder / "notes.txt").write_text("not audio")
    monkeypatch.setenv("FASTAST_PROGRESS_INTERVAL", "0")
    result = invoke(str(folder), "--checkpoint", str(checkpoint), "--json")
    assert result.exit_code == 0, result.output
    files = [Path(r["file"]).relative_to(folder).as_posix()
             for r in json.loads(result.stdout)["results"]]
    assert files == ["a.flac", "b.wav", "sub/c.wav"]
    progress = [line for line in result.stderr.splitlines() if line.startswith("predict: ")]
    assert progress[0].startswith("predict: step 1/3 (33%)") and "remaining" in progress[0]
    assert progress[-1].startswith("predict: step 3/3 (100%)") and "elapsed 0:00:0" in progress[-1]
    quiet = invoke(str(folder), "--checkpoint", str(checkpoint), "--quiet")
    assert quiet.exit_code == 0 and "step" not in quiet.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(str(empty), "--checkpoint", str(checkpoint))
    assert result.exit_code == 2 and "a folder without audio files" in result.stderr


def test_progress_lines_for_training_epochs(monkeypatch, capsys) -> None:
    monkeypatch.setenv("FASTAST_PROGRESS_INTERVAL", "0")
    set_progress(True)
    try:
        epoch = Task("epoch 2/3", 4, transient=True)
        for _ in range(4):
            epoch.advance(loss=0.25, lr=1e-3, samples_per_s=64.0)
        epoch.close()
    finally:
        set_progress(False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4  # one per step at interval 0, none repeated at the end
    assert lines[0].startswith("epoch 2/3: step 1/4 (25%), loss 0.2500, lr 1.00e-03, "
                               "64.0 samples/s, elapsed 0:00:00, remaining")
    assert lines[-1].startswith("epoch 2/3: step 4/4 (100%)") and "remaining" not in lines[-1]


def test_training_reporter_logs_plain_lines(monkeypatch, capsys) -> None:
    from fastast_cli.cli.train import ConsoleReporter

    monkeypatch.setenv("FASTAST_PROGRESS_INTERVAL", "3600")  # only the epoch-end line
    set_progress(True)
    try:
        reporter = ConsoleReporter()
        reporter.epoch_started(0, 2, 3)
        for _ in range(3):
            reporter.batch_done(0.5, 1e-4, 32.0)
        reporter.epoch_done({"epoch": 1, "train_loss": 0.5, "accuracy": 0.25, "mAP": 0.3,
                             "samples_per_s": 32.0})
        reporter.close()
    finally:
        set_progress(False)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "epoch 1/2: step 3/3 (100%), loss 0.5000, lr 1.00e-04, 32.0 samples/s, elapsed 0:00:00"]
    assert "epoch 1: loss 0.5000  accuracy 0.2500" in captured.out
