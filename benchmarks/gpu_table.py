"""The one table of `benchmarks/gpu_check.sh`: CUDA tests, throughput at the paper's shapes beside
transformers' AST and the paper's Table 1, and peak memory, from the files the parts left.

    .venv/bin/python benchmarks/gpu_table.py RESULTS   # after gpu_check.sh, or on its folder

RESULTS holds, per part NAME, `NAME.rc` (its exit status; 124: timed out) and `NAME.log`; each
test part's JUnit XML `NAME.xml` (pytest writes none when killed, hence two test parts); each
throughput part's `NAME.json` (bench_throughput.py --json). A part that failed, timed out or
left nothing still gets its row, so one broken part never hides the others. Also writes
RESULTS/table.csv.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from rich.console import Console

from fastast_cli.reports.tables import Column, rich_table, write_csv

# FastAST (Inf) samples/s of the paper's Table 1, by dataset shape and r (GPU not named there).
PAPER_SAMPLES_PER_S = {
    "esc50": {0: 65, 5: 75, 10: 85, 15: 95, 20: 110, 25: 120, 30: 125, 35: 140, 40: 150},
    "speechcommands": {0: 340, 5: 380, 10: 410, 15: 455, 20: 475, 25: 490, 30: 512, 35: 540,
                       40: 580},
    "audioset": {0: 55, 5: 59, 10: 60, 15: 62, 20: 65, 25: 68, 30: 70, 35: 74, 40: 80},
}
TEST_PARTS = ("cuda-tests", "cuda-torchrun")  # in the order gpu_check.sh runs them
COLUMNS = [
    Column("part", "part"),
    Column("setting", "setting"),
    Column("result", "result"),
    Column("samples_per_s", "samples/s", "{:.1f}"),
    Column("vs_transformers", "vs transformers", "{:.2f}", "x"),
    Column("paper", "paper S/s", "{:g}"),
    Column("vs_paper", "vs paper", "{:.2f}", "x"),
    Column("peak_mib", "forward peak MiB", "{:.0f}"),
    Column("seconds", "s", "{:.1f}"),
    Column("note", "note"),
]


def row(part: str, setting: str, result: str, note: str = "", **numbers: Any) -> dict[str, Any]:
    """A table row; numbers not given are blank."""
    cells = {column.key: None for column in COLUMNS}
    return {**cells, "part": part, "setting": setting, "result": result, "note": note,
            **numbers}


def part_status(results: Path, name: str) -> tuple[str, str]:
    """(result, note) of a part from its exit status and log: ok, timed out, failed or not run
    (`skipped` in NAME.rc: the check's time budget ran out before it)."""
    rc_file = results / f"{name}.rc"
    if not rc_file.is_file():
        return "not run", ""
    text = rc_file.read_text(encoding="utf-8", errors="replace").strip()
    if text == "skipped":
        return "not run", "the check's time budget ran out"
    log = results / f"{name}.log"
    last = ""
    if log.is_file():
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        last = lines[-1].strip()[:120] if lines else ""
    if text == "0":
        return "ok", ""
    if text in ("124", "137"):
        return "timed out", last
    return f"failed (exit {text})", last


def test_rows(results: Path, name: str) -> list[dict[str, Any]]:
    """One row per test case of the test part `name` (its recorded properties as the note),
    or one row saying why there are none."""
    status, last = part_status(results, name)
    try:
        cases = list(ElementTree.parse(results / f"{name}.xml").getroot().iter("testcase"))
    except (OSError, ElementTree.ParseError):
        return [row(name, "-", status if status != "ok" else "no report", last)]
    rows = []
    for case in cases:
        result, note = "passed", ""
        for outcome, shown in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
            found = case.find(outcome)
            if found is not None:
                result = shown
                note = (found.get("message") or "").split("\n")[0][:120]
        properties = [f"{p.get('name')} {p.get('value')}" for p in case.iter("property")]
        rows.append(row("cuda test", case.get("name", "?"), result,
                        "; ".join(part for part in [*properties, note] if part),
                        seconds=float(case.get("time") or 0)))
    if not rows:
        rows.append(row(name, "-", "no test ran", last))
    return rows


def throughput_rows(results: Path, name: str) -> list[dict[str, Any]]:
    """The rows of one bench_throughput part: each r beside transformers' AST (same shape,
    dtype and batch) and the paper's samples/s at that r; or one row saying what went wrong."""
    status, last = part_status(results, name)
    try:
        record = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
        rows = record["rows"]
        reference = next(r["samples_per_s"] for r in rows if "r" not in r)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return [row("throughput", name, status if status != "ok" else "no results", last)]
    shape = f"{record['preset']} {record['dtype']} batch {record['batch_size']}"
    paper = PAPER_SAMPLES_PER_S.get(record["preset"], {})
    out = [row("throughput", f"{shape} transformers", "ok",
               samples_per_s=reference, vs_transformers=1.0, peak_mib=rows[0].get("peak_mib"))]
    for entry in rows:
        if "r" not in entry:
            continue
        expected = paper.get(entry["r"])
        out.append(row(
            "throughput", f"{shape} r={entry['r']}", "ok",
            f"{entry['tokens']} tokens, speedup/FLOP speedup {entry['efficiency']:.2f}",
            samples_per_s=entry["samples_per_s"],
            vs_transformers=entry["samples_per_s"] / reference, paper=expected,
            vs_paper=None if expected is None else entry["samples_per_s"] / expected,
            peak_mib=entry.get("peak_mib")))
    return out


def gpu_rows(results: Path) -> list[dict[str, Any]]:
    """Every part's rows: the tests first, then each throughput part in name order."""
    rows = [row for name in TEST_PARTS for row in test_rows(results, name)]
    parts = sorted({path.stem for path in results.glob("throughput-*.rc")} |
                   {path.stem for path in results.glob("throughput-*.json")})
    for name in parts:
        rows += throughput_rows(results, name)
    return rows


def machine_note(results: Path) -> str:
    """The GPU and libraries, from the first throughput result that recorded them."""
    for path in sorted(results.glob("throughput-*.json")):
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))["machine"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return "; ".join(f"{key} {value}" for key, value in facts.items())
    return "machine not recorded"


# Results of a row that ran to the end as it should (a skipped test names its reason).
COMPLETE = ("ok", "passed", "skipped")


def main(argv: list[str]) -> int:
    """Print the table of RESULTS and write RESULTS/table.csv; exit status 0 when every row
    passed (or was skipped), 1 when one failed, timed out or did not run, 2 on a usage error."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: gpu_table.py RESULTS_FOLDER", file=sys.stderr)
        return 2
    results = Path(argv[0])
    rows = gpu_rows(results)
    console = Console(width=200)
    console.print(rich_table(f"GPU check ({machine_note(results)})", rows, COLUMNS))
    write_csv(results / "table.csv", rows, COLUMNS)
    console.print(f"wrote {results / 'table.csv'}")
    unfinished = [item for item in rows if item["result"] not in COMPLETE]
    if unfinished:
        console.print(f"{len(unfinished)} of {len(rows)} rows did not pass: "
                      + ", ".join(sorted({item["result"] for item in unfinished})))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
