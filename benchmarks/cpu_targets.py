"""One model built for several x86 CPUs and run here: int8 for each, fp32 for those without VNNI, timed in one
process (interleaved rounds), the int8 outputs compared bit for bit with the host build's.

    .venv/bin/python benchmarks/cpu_targets.py [--model resnet18] [--cpus icelake-server,skylake-avx512,haswell]
                                              [--rounds 3 --repeat 20]

The host build uses everything this CPU has (AMX where it has it); ``icelake-server`` is AVX-512 VNNI without
AMX (what a ``znver4`` build runs on); ``skylake-avx512`` and ``haswell`` have no VNNI, so their int8 layers
are ``packed_layouts.WIDE`` kernels (operands widened to int16, ``vpmaddwd`` on zmm / ymm). Each round times
every build (median of ``--repeat`` calls after warm-up, 2 threads); the table gives the median over rounds
and each build's ratio to the host's and to the VNNI build's int8 time. Calibration: the 5 bundled photos and
their mirror images (``int8_models.calibration``); ResNet-18's weights are random: speed only.
"""

from __future__ import annotations

import argparse

import numpy as np
import tvm

import compiler
from backends.cpu import missing_features
from compiler.bench import qc_threads, sample_inputs, time_calls
from compiler.sources import resolve

from int8_models import calibration  # noqa: E402  (benchmarks/ is the script's directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--cpus", default="icelake-server,skylake-avx512,haswell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    source, samples = resolve(args.model), calibration(args.model)
    imported = compiler.import_model(source)
    builds = {("host", "int8"): compiler.compile(imported, quantize="w8a8", calibration=samples)}
    for cpu in args.cpus.split(","):
        target = {"kind": "llvm", "mcpu": cpu, "num-cores": 2}
        if missing_features(tvm.target.Target(target)):
            print(f"skipping {cpu}: this CPU cannot run its code")
            continue
        builds[(cpu, "int8")] = compiler.compile(imported, quantize="w8a8", calibration=samples, target=target)
        if "vnni" not in cpu and cpu != "icelake-server":
            builds[(cpu, "fp32")] = compiler.compile(imported, target=target)
    inputs = sample_inputs(builds[("host", "int8")], source)
    reference = builds[("host", "int8")].run(inputs)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in builds}
    with qc_threads(2):
        for _ in range(args.rounds):
            for key, model in builds.items():
                arrays = model.prepare(inputs)
                times[key].append(float(np.median(time_calls(lambda: model.call(arrays), 5, args.repeat))))
    host = np.median(times[("host", "int8")])
    vnni = np.median(times[("icelake-server", "int8")]) if ("icelake-server", "int8") in times else None
    print(f"{args.model}, 2 threads, {args.rounds} rounds x {args.repeat} calls")
    print(f"{'build':28s} {'median ms':>10s} {'rounds':>24s} {'/host':>6s} {'/vnni':>6s}  int8 bits vs host")
    for (cpu, precision), values in times.items():
        median = np.median(values)
        exact = "-"
        if precision == "int8":
            out = builds[(cpu, precision)].run(inputs)
            exact = "identical" if all(np.array_equal(out[k], reference[k]) for k in reference) else "DIFFERENT"
        ratio_vnni = f"{median / vnni:6.2f}" if vnni else "     -"
        spread = " ".join(f"{v:.2f}" for v in values)
        print(f"{cpu + ' ' + precision:28s} {median:10.2f} {spread:>24s} {median / host:6.2f} {ratio_vnni}  {exact}")


if __name__ == "__main__":
    main()
