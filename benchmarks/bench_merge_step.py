"""The merge step's fixed cost per block, per method: time beside the block's attention + MLP,
and the ops it runs (counted by torch.profiler, so a before/after kernel count is a hard number).

One block of the tiny and small AST (fp32, dense rows, ~300 tokens: 256 frames at stride 10) at
batch 8 and 32: for every method (tome, pitome, evit, tofu in a pruning and in an MLERP block,
random) and r, the merge step (the bias, the cap, `method.match` and `state.apply`: what a
merging block runs and a block at r = 0 does not) is timed beside the same block's attention +
MLP, all settings round by round in ONE interleaved loop (median per setting; with one thread,
the thread's CPU time, which preemption on a loaded machine does not inflate). Columns:

- merge ms, block ms: median merge step and attention + MLP of the block (N tokens in);
- merge / block: the fraction of a block the merge step adds (what keeps speedup ÷ FLOP speedup
  below 1: the FLOP count of the merge step is ~0);
- ops: aten ops the merge step runs (leaves of the profiler's op tree); kernels: those that
  compute (views, allocation and metadata ops left out); syncs: ops that wait for the device on
  CUDA (`nonzero` from boolean-mask indexing, `item`/`_local_scalar_dense`, `masked_select`).

With `--baseline REV` the engine (fastast_cli/) of git revision REV runs beside the working
tree's: two worker processes, rounds alternating between them, and every row gets the
baseline's numbers and the ratio (new ÷ baseline). Times on a loaded machine are indicative;
op counts are exact.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_merge_step.py --rounds 20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_merge_step.py --baseline HEAD~3
    .venv/bin/python benchmarks/bench_merge_step.py --models tiny --batches 8 --r 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHOD_ROWS = ("tome", "pitome", "evit", "tofu-prune", "tofu-mlerp", "random")
VIEW_OPS = {
    "aten::slice", "aten::select", "aten::expand", "aten::as_strided", "aten::view",
    "aten::transpose", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::t",
    "aten::alias", "aten::reshape", "aten::_reshape_alias", "aten::unbind", "aten::detach",
    "aten::empty", "aten::empty_strided", "aten::resize_", "aten::expand_as", "aten::view_as",
    "aten::lift_fresh", "aten::_unsafe_view", "aten::split", "aten::chunk", "aten::narrow",
    "aten::result_type", "aten::is_nonzero", "aten::empty_like",
}
SYNC_OPS = {"aten::nonzero", "aten::_local_scalar_dense", "aten::masked_select",
            "aten::nonzero_numpy"}


def setting_key(model: str, batch: int, method: str, r: int) -> str:
    return f"{model}|{batch}|{method}|{r}"


# ---------------------------------------------------------------- worker (imports the engine)

class Case:
    """One block of a model at one batch: its input tokens, and the block's query, key, bias."""

    def __init__(self, size: str, batch: int, frames: int, stride: int) -> None:
        import torch

        from fastast_cli import build_model

        torch.manual_seed(0)
        self.model = build_model(size, 10, target_length=frames, fstride=stride,
                                 tstride=stride).eval()
        self.depth = len(self.model.blocks)
        self.block = self.model.blocks[1]
        with torch.inference_mode():
            self.tokens = self.model.embed(torch.randn(batch, frames, 128))
            self.sizes = torch.ones(*self.tokens.shape[:2], 1)  # a block after the first merge
            state = new_state(self.sizes)
            bias = state.attention_bias(self.tokens.dtype, True)
            attended, self.query, self.key = self.block.attn(self.block.norm1(self.tokens),
                                                             state, bias)
            self.attended = self.tokens + attended

    def attention_mlp(self) -> None:
        """The block's work apart from the merge step, at the full token count."""
        state = new_state(self.sizes)
        bias = state.attention_bias(self.tokens.dtype, True)
        attended, _, _ = self.block.attn(self.block.norm1(self.tokens), state, bias)
        tokens = self.tokens + attended
        self.block.mlp(self.block.norm2(tokens))

    def merge_step(self, method: str, r: int) -> Callable[[], None]:
        """The merge step as `Block.forward` runs it: the bias, then `state.reduce`."""
        from fastast_cli.models.reduction import make_method

        name, _, phase = method.partition("-")
        reduction = make_method(name)
        block = self.depth // 2 + 1 if phase == "mlerp" else 1

        def run() -> None:
            merge_step(self, reduction, block, r)

        return run


def new_state(sizes: object) -> object:
    """A dense token state holding `sizes`, in this engine's API (`models/vit.py`'s since the
    engine's reading path; `models/token_state.py`'s before, for `--baseline`)."""
    try:
        from fastast_cli.models.vit import TokenState
    except ImportError:  # an engine before the reading path
        from fastast_cli.models.token_state import TokenState
    return TokenState(sizes=sizes)


def merge_step(case: Case, reduction: object, block: int, r: int) -> None:
    """What a merging block runs beyond attention and MLP: the bias, the cap, the method's
    matching and its application, in this engine's API."""
    state = new_state(case.sizes)
    bias = state.attention_bias(case.tokens.dtype, True)
    if hasattr(state, "reduce"):  # an engine before the reading path
        state.reduction, state.block, state.depth = reduction, block, case.depth
        state.reduce(case.attended, case.query, case.key, r, bias)
        return
    from fastast_cli.models.reduction.matching import ReductionStep
    from fastast_cli.models.reduction.schedule import NUM_PREFIX_TOKENS

    clip_r = state.allowed_r(case.attended, r)
    step = ReductionStep(case.attended, case.query, case.key, state.layout, clip_r, block,
                         case.depth, NUM_PREFIX_TOKENS, bias)
    state.apply(reduction.match(step), case.attended)


def count_ops(run: Callable[[], None]) -> dict[str, int]:
    """Leaf aten ops of one call, the computing ones among them, and the device syncs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        run()  # caches filled (random's patterns), as in every block but the first call
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    leaves = [e for e in events
              if not any(child.name.startswith("aten::") for child in e.cpu_children)]
    return {"ops": len(leaves),
            "kernels": sum(e.name not in VIEW_OPS for e in leaves),
            "syncs": sum(e.name in SYNC_OPS for e in events)}


def seconds(run: Callable[[], None], repeat: int, clock: Callable[[], float]) -> float:
    """Mean seconds of `repeat` calls by `clock`."""
    start = clock()
    for _ in range(repeat):
        run()
    return (clock() - start) / repeat


def worker(args: argparse.Namespace) -> None:
    """Build the cases, report op counts, then time one round per line read on stdin."""
    import torch

    torch.set_num_threads(args.threads)
    # one thread: its CPU time, which a loaded machine's preemption does not inflate
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    settings: dict[str, tuple[Callable[[], None], int]] = {}
    ops: dict[str, dict[str, int]] = {}
    for size in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            case = Case(size, batch, args.frames, args.stride)
            settings[setting_key(size, batch, "block", 0)] = (case.attention_mlp, 1)
            for method in args.methods.split(","):
                for r in [int(v) for v in args.r.split(",")]:
                    run = case.merge_step(method, r)
                    key = setting_key(size, batch, method, r)
                    ops[key] = count_ops(run)
                    settings[key] = (run, args.repeat)
    print(json.dumps({"ops": ops}), flush=True)
    with torch.inference_mode():
        for run, repeat in settings.values():  # warm-up
            seconds(run, repeat, clock)
        for _ in sys.stdin:
            print(json.dumps({k: seconds(run, repeat, clock) for k, (run, repeat)
                              in settings.items()}), flush=True)


# ---------------------------------------------------------------- parent (no engine import)

class Worker:
    """A worker process running the engine found at `engine_root`."""

    def __init__(self, engine_root: Path, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(engine_root))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", *argv], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ops = json.loads(self.process.stdout.readline())["ops"]
        self.times: dict[str, list[float]] = {}

    def round(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        for key, value in json.loads(self.process.stdout.readline()).items():
            self.times.setdefault(key, []).append(value)

    def median_ms(self, key: str) -> float:
        return 1e3 * statistics.median(self.times[key])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def export_engine(revision: str, into: Path) -> Path:
    """fastast_cli/ of git `revision`, extracted under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "fastast_cli"],
                             check=True, capture_output=True).stdout
    path = into / "engine.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def report(workers: dict[str, Worker], args: argparse.Namespace) -> None:
    """One row per model × batch × method × r; with a baseline, its numbers and the ratios."""
    new = workers["new"]
    old = workers.get("baseline")
    header = f"{'model':6} {'batch':>5} {'method':11} {'r':>3} {'merge ms':>9} {'block ms':>9} " \
             f"{'merge/block':>11} {'ops':>4} {'kernels':>7} {'syncs':>5}"
    if old:
        header += f" | {'base merge ms':>13} {'base ops':>8} {'base kernels':>12} " \
                  f"{'new/base time':>13}"
    print(header)
    print("-" * len(header))
    for size in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            block = new.median_ms(setting_key(size, batch, "block", 0))
            for method in args.methods.split(","):
                for r in [int(v) for v in args.r.split(",")]:
                    key = setting_key(size, batch, method, r)
                    merge, ops = new.median_ms(key), new.ops[key]
                    line = (f"{size:6} {batch:5d} {method:11} {r:3d} {merge:9.3f} {block:9.2f} "
                            f"{100 * merge / block:10.1f}% {ops['ops']:4d} "
                            f"{ops['kernels']:7d} {ops['syncs']:5d}")
                    if old:
                        base = old.median_ms(key)
                        line += (f" | {base:13.3f} {old.ops[key]['ops']:8d} "
                                 f"{old.ops[key]['kernels']:12d} {merge / base:13.2f}")
                    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--methods", default=",".join(METHOD_ROWS))
    parser.add_argument("--r", default="4,8,16")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--stride", type=int, default=10, help="patch stride (10: 300 patches)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--repeat", type=int, default=5, help="merge steps per timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", help="git revision whose engine runs beside this one")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    argv = [f"--{name}={getattr(args, name)}" for name in
            ("models", "batches", "methods", "r", "frames", "stride", "repeat", "threads")]
    with tempfile.TemporaryDirectory() as scratch:
        workers = {"new": Worker(ROOT, argv)}
        if args.baseline:
            workers["baseline"] = Worker(export_engine(args.baseline, Path(scratch)), argv)
        for index in range(args.rounds):
            order = list(workers.values())
            for each in order if index % 2 == 0 else order[::-1]:
                each.round()
        for each in workers.values():
            each.close()
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import machine_line

    clock = "thread CPU time" if args.threads == 1 else "wall time"

    print(machine_line("cpu"))
    print(f"one block (index 1; tofu-mlerp: depth // 2 + 1), fp32, {args.frames} frames at "
          f"stride {args.stride}, {args.threads} thread(s), median of {args.rounds} interleaved "
          f"rounds of {args.repeat} merge steps, {clock}; indicative on a loaded machine")
    report(workers, args)


if __name__ == "__main__":
    main()
