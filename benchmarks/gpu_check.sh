#!/usr/bin/env bash
# One GPU, under 8 minutes, one table: the CUDA tests (tests/test_cuda.py: AMP training steps for
# every method and layout, the packed merge under sync-debug "error", the SDPA kernel with and
# without the proportional mask, NCCL and evaluate/predict under torchrun) and
# bench_throughput.py at the paper's three shapes in fp16 and bf16, beside transformers' AST and
# the paper's Table 1, with peak memory. Each part runs under its own timeout, within an overall
# budget; a part that fails or times out gets its row and the others still run.
#
#   benchmarks/gpu_check.sh [RESULTS_FOLDER]        # default gpu-check-YYYYmmdd-HHMMSS
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_BUDGET_S (default 450:
# the whole check), TEST_TIMEOUT_S (default 100), TORCHRUN_TIMEOUT_S (default 120),
# BENCH_TIMEOUT_S (default 40, per shape).
#
# It first checks that PYTHON imports every package the parts need and sees a GPU, and stops
# there (exit 2, one line naming what is missing) rather than let every part fail alike. On a
# machine whose Python lacks some of them (say, an image with PyTorch but no soundfile), install
# their wheels into a folder and put it on PYTHONPATH first:
#   python3 -m pip install --no-index --no-deps --target /tmp/site WHEELS... &&
#     PYTHONPATH=/tmp/site PYTHON=python3 benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
RESULTS=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
if [ -e "$RESULTS" ] && [ -n "$(ls -A "$RESULTS" 2>/dev/null)" ]; then
  echo "gpu_check: $RESULTS exists and is not empty: pick another folder" >&2
  exit 2
fi
mkdir -p "$RESULTS" || exit 2
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# run_part NAME TIMEOUT COMMAND...: its output in NAME.log, its exit status in NAME.rc
# (124: timed out; "skipped": the budget ran out before it).
run_part() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 10 ]; then
    echo skipped > "$RESULTS/$name.rc"
    echo "== $name: skipped (budget spent)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit}s)"
  timeout -k 10 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  echo $? > "$RESULTS/$name.rc"
  tail -n 3 "$RESULTS/$name.log"
}

# Preflight: the packages the parts import, and a GPU.
if ! "$PYTHON" - > "$RESULTS/preflight.log" 2>&1 <<'PY'
import importlib.util
import sys

needed = ["torch", "torchaudio", "timm", "typer", "rich", "yaml", "soundfile", "numpy",
          "safetensors", "matplotlib", "sklearn", "huggingface_hub", "pytest", "transformers"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_check: {sys.executable} lacks {', '.join(missing)}: install them first")


def imports(name: str) -> None:
    """Present is not enough: a torchaudio built for another torch fails here."""
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001
        sys.exit(f"gpu_check: {sys.executable} cannot import {name} "
                 f"({type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]})")


imports("torch")
import torch  # noqa: E402

if not torch.cuda.is_available():  # before the slow imports: no GPU, no check
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU")
for name in needed[1:] + ["sklearn.metrics", "fastast_cli.cli", "fastast_cli.models.elastic"]:
    imports(name)
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.cuda.get_device_name()}")
PY
then
  cat "$RESULTS/preflight.log" >&2
  exit 2
fi
cat "$RESULTS/preflight.log"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$RESULTS/gpu.txt" 2>&1 || true
cat "$RESULTS/gpu.txt"

tests() {  # tests NAME TIMEOUT -k EXPRESSION: a share of tests/test_cuda.py, its own report
  run_part "$1" "$2" "$PYTHON" -m pytest tests/test_cuda.py -q -p no:cacheprovider \
    -o junit_family=xunit1 --junitxml="$RESULTS/$1.xml" "${@:3}"
}
tests cuda-tests "${TEST_TIMEOUT_S:-100}" -k "not torchrun and not nccl"
tests cuda-torchrun "${TORCHRUN_TIMEOUT_S:-120}" -k "torchrun or nccl"

bench() {  # bench PRESET DTYPE BATCH
  run_part "throughput-$1-$2-b$3" "${BENCH_TIMEOUT_S:-40}" "$PYTHON" \
    benchmarks/bench_throughput.py --device cuda --model base --preset "$1" --dtype "$2" \
    --batch-size "$3" --r 0,20,40 --runs 5 --warmup 2 --json "$RESULTS/throughput-$1-$2-b$3.json"
}
# The ESC-50 shape's three batch sizes first: if the budget runs short, other shapes go unrun.
bench esc50 fp16 128
bench esc50 fp16 64
bench esc50 fp16 256
bench esc50 bf16 128
for preset in speechcommands audioset; do
  for dtype in fp16 bf16; do
    bench "$preset" "$dtype" 128
  done
done

# Exit status: the table's (0: every row passed or was skipped; 1: a part failed, timed out
# or did not run).
"$PYTHON" benchmarks/gpu_table.py "$RESULTS"
status=$?
echo "gpu_check: $(( $(date +%s) - START ))s in all; logs and table.csv in $RESULTS"
exit $status
