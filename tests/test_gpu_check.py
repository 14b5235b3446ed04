"""benchmarks/gpu_check.sh's table, assembled from recorded part outputs (the GPU parts cannot
run here): test outcomes, throughput beside transformers and the paper, failed and timed-out
parts kept as rows; and the bench_throughput.py --json contract it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_table  # noqa: E402
from machine import machine_facts, machine_line  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_cuda" name="test_sdpa_kernel_is_a_fused_one[proportional-mask]"
 time="1.25"><properties><property name="sdpa" value="efficient"/></properties></testcase>
<testcase classname="tests.test_cuda" name="test_packed_merge_runs_without_a_host_sync[tome]"
 time="0.5"><failure message="RuntimeError: called a synchronizing CUDA operation&#10;more">
trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_nccl_collectives_that_evaluate_uses" time="0">
<skipped message="needs a CUDA GPU"/></testcase>
</testsuite></testsuites>
"""


def bench_record(preset: str, speeds: dict) -> dict:
    """What bench_throughput.py --json writes (rows as it builds them)."""
    rows = [{"setting": "transformers AST (SDPA)", "tokens": 602, "gflops": 115.9,
             "samples_per_s": speeds["transformers"], "speedup": 1.0, "flop_speedup": 1.0,
             "efficiency": 1.0, "peak_mib": 4100.0}]
    for r, tokens in ((0, 602), (20, 362), (40, 122)):
        rows.append({"setting": f"fastast r={r}", "tokens": tokens, "gflops": 100.0,
                     "samples_per_s": speeds[r], "speedup": speeds[r] / speeds[0],
                     "flop_speedup": 1.0, "efficiency": 0.98, "r": r, "peak_mib": 3000.0 - r})
    return {"model": "base", "preset": preset, "frames": 512, "batch_size": 128,
            "device": "cuda", "dtype": "float16", "runs": 5,
            "machine": {"gpu": "NVIDIA H100 80GB HBM3 (CUDA 13.0)", "torch": "2.11.0"},
            "rows": rows}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A recorded check: tests done, one shape measured, one timed out, one left unrun by the
    budget, one that crashed leaving a broken JSON."""
    (tmp_path / "cuda-tests.rc").write_text("1\n")
    (tmp_path / "cuda-tests.xml").write_text(JUNIT)
    (tmp_path / "cuda-torchrun.rc").write_text("124\n")  # killed: pytest wrote no report
    (tmp_path / "cuda-torchrun.log").write_text("..\n")
    name = "throughput-esc50-fp16-b128"
    (tmp_path / f"{name}.rc").write_text("0\n")
    record = bench_record("esc50", {"transformers": 600.0, 0: 620.0, 20: 780.0, 40: 1000.0})
    (tmp_path / f"{name}.json").write_text(json.dumps(record))
    (tmp_path / "throughput-audioset-bf16-b128.rc").write_text("124\n")
    (tmp_path / "throughput-audioset-bf16-b128.log").write_text("warming up\nround 3 of 5\n\n")
    (tmp_path / "throughput-speechcommands-fp16-b128.rc").write_text("skipped\n")
    (tmp_path / "throughput-esc50-fp16-b256.rc").write_text("1\n")
    (tmp_path / "throughput-esc50-fp16-b256.log").write_text("torch.OutOfMemoryError: CUDA\n")
    (tmp_path / "throughput-esc50-fp16-b256.json").write_text("{")
    return tmp_path


def by_setting(rows: list[dict]) -> dict[str, dict]:
    return {row["setting"]: row for row in rows}


def test_test_outcomes_become_rows_with_their_recorded_properties(results):
    rows = by_setting(gpu_table.test_rows(results, "cuda-tests"))
    sdpa = rows["test_sdpa_kernel_is_a_fused_one[proportional-mask]"]
    assert (sdpa["result"], sdpa["note"], sdpa["seconds"]) == ("passed", "sdpa efficient", 1.25)
    sync = rows["test_packed_merge_runs_without_a_host_sync[tome]"]
    assert sync["result"] == "FAILED"
    assert sync["note"] == "RuntimeError: called a synchronizing CUDA operation"
    assert rows["test_nccl_collectives_that_evaluate_uses"]["result"] == "skipped"


def test_a_missing_test_report_is_one_row_saying_why(results):
    (results / "cuda-tests.xml").unlink()
    (results / "cuda-tests.rc").write_text("124")
    (results / "cuda-tests.log").write_text("collecting ...\n")
    assert [(r["result"], r["note"]) for r in gpu_table.test_rows(results, "cuda-tests")] == [
        ("timed out", "collecting ...")]
    assert [(r["part"], r["result"], r["note"])
            for r in gpu_table.test_rows(results, "cuda-torchrun")] == [
        ("cuda-torchrun", "timed out", "..")]
    (results / "cuda-torchrun.rc").unlink()
    assert gpu_table.test_rows(results, "cuda-torchrun")[0]["result"] == "not run"


def test_throughput_sits_beside_transformers_and_the_paper(results):
    rows = by_setting(gpu_table.throughput_rows(results, "throughput-esc50-fp16-b128"))
    reference = rows["esc50 float16 batch 128 transformers"]
    assert reference["samples_per_s"] == 600.0 and reference["peak_mib"] == 4100.0
    r20 = rows["esc50 float16 batch 128 r=20"]
    assert r20["vs_transformers"] == pytest.approx(780 / 600)
    assert r20["paper"] == 110 and r20["vs_paper"] == pytest.approx(780 / 110)
    assert r20["peak_mib"] == 2980.0 and r20["note"].startswith("362 tokens")
    assert rows["esc50 float16 batch 128 r=40"]["paper"] == 150
    assert rows["esc50 float16 batch 128 r=0"]["paper"] == 65


def test_failed_timed_out_and_unrun_parts_keep_their_rows(results):
    rows = by_setting(gpu_table.gpu_rows(results))
    assert rows["throughput-audioset-bf16-b128"]["result"] == "timed out"
    assert rows["throughput-audioset-bf16-b128"]["note"] == "round 3 of 5"
    assert rows["throughput-speechcommands-fp16-b128"]["result"] == "not run"
    assert rows["throughput-esc50-fp16-b256"]["result"] == "failed (exit 1)"
    assert rows["throughput-esc50-fp16-b256"]["note"] == "torch.OutOfMemoryError: CUDA"
    assert len([r for r in rows.values() if r["part"] == "throughput"]) == 4 + 3
    parts = [row["part"] for row in gpu_table.gpu_rows(results)]
    assert parts[:4] == ["cuda test"] * 3 + ["cuda-torchrun"]  # the tests first


def test_main_prints_one_table_and_writes_its_csv(results, capsys):
    assert gpu_table.main([str(results)]) == 1  # parts failed, timed out and did not run
    printed = capsys.readouterr().out
    assert "rows did not pass: FAILED, failed (exit 1), not run, timed out" in printed
    assert "GPU check (gpu NVIDIA H100 80GB HBM3" in printed
    assert "timed out" in printed and "1.30x" in printed
    lines = (results / "table.csv").read_text().splitlines()
    assert lines[0].startswith("part,setting,result,samples_per_s")
    assert len(lines) == 1 + 3 + 1 + 4 + 3
    assert gpu_table.main([str(results / "absent")]) == 2


def test_main_exits_0_only_when_every_row_passed_or_was_skipped(tmp_path, capsys):
    passing = JUNIT.replace('<failure message="RuntimeError: called a synchronizing CUDA '
                            'operation&#10;more">\ntrace</failure>', "")
    for part in gpu_table.TEST_PARTS:
        (tmp_path / f"{part}.rc").write_text("0\n")
        (tmp_path / f"{part}.xml").write_text(passing)
    name = "throughput-esc50-fp16-b128"
    (tmp_path / f"{name}.rc").write_text("0\n")
    record = bench_record("esc50", {"transformers": 600.0, 0: 620.0, 20: 780.0, 40: 1000.0})
    (tmp_path / f"{name}.json").write_text(json.dumps(record))
    assert gpu_table.main([str(tmp_path)]) == 0
    assert "did not pass" not in capsys.readouterr().out
    (tmp_path / "throughput-audioset-fp16-b128.rc").write_text("124\n")
    assert gpu_table.main([str(tmp_path)]) == 1


def test_the_script_names_the_parts_the_table_reads():
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert '--junitxml="$RESULTS/$1.xml"' in script
    assert all(f"tests {name} " in script for name in gpu_table.TEST_PARTS)
    assert 'run_part "throughput-$1-$2-b$3"' in script
    assert '--json "$RESULTS/throughput-$1-$2-b$3.json"' in script
    assert "gpu_table.py \"$RESULTS\"" in script
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")])
    assert done.returncode == 0


def run_check(tmp_path: Path, python: str) -> tuple[subprocess.CompletedProcess, Path]:
    results = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(results)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": python})
    return done, results


def test_the_check_stops_first_naming_the_packages_its_python_lacks(tmp_path):
    """A Python without the packages (here: site-packages switched off with -S) stops the
    check at once, exit 2, with one line naming them, before any part runs."""
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    done, results = run_check(tmp_path, str(wrapper))
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("gpu_check: ") and " lacks " in line
    assert "torch" in line and "soundfile" in line and "install them first" in line
    assert sorted(path.name for path in results.iterdir()) == ["preflight.log"]


def test_the_check_stops_first_when_a_present_package_does_not_import(tmp_path):
    """Present is not enough: a package that fails to import (a torch built for another
    CUDA, a torchaudio for another torch) stops the check, named."""
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise OSError("libcudart.so.13: cannot open shared")')
    results = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(results)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable,
                               "PYTHONPATH": str(shadow.parent)})
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("gpu_check: ") and " cannot import torch (OSError: " in line
    assert line.endswith("libcudart.so.13: cannot open shared)")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_the_check_stops_first_without_a_gpu(tmp_path):
    done, results = run_check(tmp_path, sys.executable)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("sees no CUDA GPU")
    assert sorted(path.name for path in results.iterdir()) == ["preflight.log"]


def test_bench_throughput_json_feeds_the_table(tmp_path):
    """The real bench_throughput.py --json on a tiny model (one untimed-quality run: a format
    check, not a measurement) gives rows the table reads."""
    folder = tmp_path / "results"
    folder.mkdir()
    name = "throughput-speechcommands-fp32-b1"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_throughput.py"), "--model", "tiny",
         "--preset", "speechcommands", "--r", "0,10", "--runs", "1", "--warmup", "0",
         "--batch-size", "1", "--device", "cpu", "--json", str(folder / f"{name}.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("machine: cpu ")
    (folder / f"{name}.rc").write_text("0")
    rows = by_setting(gpu_table.throughput_rows(folder, name))
    r10 = rows["speechcommands float32 batch 1 r=10"]
    assert r10["result"] == "ok" and r10["paper"] == 410 and r10["samples_per_s"] > 0
    assert r10["note"].startswith("26 tokens")
    assert rows["speechcommands float32 batch 1 transformers"]["vs_transformers"] == 1.0


def test_machine_facts_name_processor_vector_width_threads_and_versions():
    import torch

    facts = machine_facts("cpu")
    assert facts["vector width"] == torch.backends.cpu.get_cpu_capability()
    assert facts["threads"].startswith(f"{torch.get_num_threads()} of ")
    assert facts["torch"] and facts["cpu"]
    assert machine_line("cpu").startswith(f"machine: cpu {facts['cpu']}; vector width ")
