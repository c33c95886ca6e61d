"""The long fuzz run: random small networks through float, W8A8 and W4A8 compiles and the per-op oracle.

    .venv/bin/python benchmarks/fuzz.py                                  # 500 graphs from seed 0
    .venv/bin/python benchmarks/fuzz.py --graphs 50 --seed 1000 --time-budget 1800 --out build/fuzz
    .venv/bin/python benchmarks/fuzz.py --seed 17 --graphs 1             # rerun one seed (a reproducer)
    .venv/bin/python benchmarks/fuzz.py --seed 17 --graphs 1 --show      # and print its graph
    .venv/bin/python benchmarks/fuzz.py --graphs 20 --stages w8a8 --mutation zero_point   # prove it can fail
    .venv/bin/python benchmarks/fuzz.py --graphs 30 --stages w8a8,w4a8 --target '{"kind":"llvm","mcpu":"haswell"}'

Prints a progress line per graph, then the coverage table (graphs using each op, pattern and override kind)
and the failures, each with the command that reruns its seed and (``--out``) the reproducer's folder.
``--json PATH`` writes the whole report. Exit status 1 when any graph failed. See ``tests/fuzz/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TVM_NUM_THREADS", "2")

from tests.fuzz.graphs import generate  # noqa: E402
from tests.fuzz.runner import STAGES, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=500, help="number of graphs (seeds START..START+N-1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (START)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop starting graphs after S seconds")
    parser.add_argument("--out", type=Path, default=None, help="folder for the reproducers of failing graphs")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--mutation", action="append", default=[],
                        help="enable a test-only lowering bug (passes.lower_integer.MUTATIONS); repeatable")
    parser.add_argument("--stop-at-first-failure", action="store_true")
    parser.add_argument("--show", action="store_true", help="print each graph before its result")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON to this path")
    parser.add_argument("--target", default=None,
                        help='build the quantized models for this LLVM target (JSON), e.g. '
                             '\'{"kind": "llvm", "mcpu": "haswell"}\' for the kernels of a CPU without VNNI')
    args = parser.parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")

    def progress(done: int, total: int, result) -> None:
        if args.show:
            print(generate(result.seed).describe(), flush=True)
        status = "ok" if result.ok else "FAIL " + "; ".join(f"{f.kind}@{f.stage}" for f in result.failures)
        timings = " ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
        print(f"[{done}/{total}] seed {result.seed}: {status} ({result.seconds:.1f} s: {timings}) "
              f"{' '.join(result.tags)}", flush=True)
        if args.show:
            for stage, text in result.details.items():
                print(f"    {stage}: {text}", flush=True)

    report = run(range(args.seed, args.seed + args.graphs), args.time_budget, stages, args.out, args.mutation,
                 progress, args.stop_at_first_failure, args.target)
    print(report.format())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
