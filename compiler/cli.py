"""The ``qc`` command line: compile, tune, run, bench, profile, report, verify, pareto, info, costmodel, passes.

Every error a user can cause prints one line ``qc: error: ...`` and exits with status 2; nothing half
written is left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from .errors import USER_ERRORS
    from .quantization.oracle import OracleError

    try:
        return args.handler(args) or 0
    except OracleError as exc:  # the compiler's fault, not the user's: status 1
        print(f"qc: oracle failed: {exc}", file=sys.stderr)
        return 1
    except USER_ERRORS as exc:
        print(f"qc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qc info ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qc", description="A quantizing deep-learning compiler on Apache TVM.")
    commands = parser.add_subparsers(dest="command", required=True)

    c = commands.add_parser("compile", help="compile a model into an artifact directory")
    _model_arguments(c)
    c.add_argument("-o", "--output", required=True, type=Path, help="artifact directory to write")
    c.add_argument("--oracle", action="store_true", help="quantized models: check the integer executable "
                   "against the QDQ float simulation op by op on the first calibration samples (fails: status 1)")
    c.set_defaults(handler=_compile)

    t = commands.add_parser("tune", help="tune a model's kernels within a trial budget (int8 register tiles, "
                            "then MetaSchedule), keeping the databases in --work-dir for later compiles")
    _model_arguments(t)
    t.add_argument("--trials", type=int, required=True, help="measured candidates in all")
    t.add_argument("-o", "--output", type=Path, help="also write the tuned artifact here")
    t.set_defaults(handler=_tune)

    r = commands.add_parser("run", help="run an artifact on inputs from an .npz file")
    r.add_argument("artifact", type=Path)
    r.add_argument("--input", "-i", type=Path, required=True, help=".npz with one array per input name")
    r.add_argument("--output", "-o", type=Path, help=".npz to write the outputs to (default: print a summary)")
    r.set_defaults(handler=_run)

    b = commands.add_parser("bench", help="latency of a model (or artifact) against onnxruntime and PyTorch; "
                            "`qc bench peak`: this CPU's int8 and fp32 peak")
    _model_arguments(b, artifact_ok=True)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--repeat", type=int, default=30)
    b.add_argument("--rounds", type=int, default=5,
                   help="the timed runs come in this many rounds, interleaved across engines")
    b.add_argument("--threads", type=int, default=2, help="threads for every engine: qc's TVM thread pool, onnxruntime, PyTorch")
    b.add_argument("--no-peers", action="store_true", help="time only the compiled model")
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.set_defaults(handler=_bench)

    prof = commands.add_parser("profile", help="per-kernel time of an artifact, its share, GOP/s and fraction "
                               "of this CPU's peak")
    prof.add_argument("artifact", type=Path)
    prof.add_argument("--input", "-i", type=Path, help=".npz with one array per input name (default: zeros)")
    prof.add_argument("--warmup", type=int, default=3)
    prof.add_argument("--repeat", type=int, default=20)
    prof.add_argument("--all", action="store_true", help="every row (default: the 25 slowest)")
    prof.add_argument("--json", action="store_true")
    prof.set_defaults(handler=_profile)

    rep = commands.add_parser("report", help="per-layer SQNR of a quantized model vs float, worst first; "
                              "with --formats, of each layer with its weight and input in each number format")
    _model_arguments(rep)
    rep.add_argument("--formats", metavar="LIST",
                     help="comma-separated number formats (int8, int4, fp8_e4m3, fp8_e5m2, mxint8, mxfp8_e4m3, "
                          "mxfp6_e2m3, mxint4, mxfp4), simulated on the --calib samples (no --quantize)")
    rep.add_argument("--plot", metavar="PNG", help="with --formats: also draw the table to this PNG")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(handler=_report)

    ver = commands.add_parser("verify", help="the per-op oracle: the integer executable against the QDQ float "
                              "simulation, op by op and end to end (status 1 when it fails)")
    _model_arguments(ver)
    ver.add_argument("--samples", type=int, default=4, help="calibration samples to check on (default 4)")
    ver.add_argument("--json", action="store_true")
    ver.set_defaults(handler=_verify)

    par = commands.add_parser("pareto", help="mixed precision: quality vs weight size and latency, "
                              "uniform W8/W4 and ILP budgets, as a table and a PNG")
    _model_arguments(par)
    par.add_argument("--eval", type=Path, help=".npz of evaluation samples (default: the calibration samples)")
    par.add_argument("--points", type=int, default=3, help="ILP size budgets between uniform W4 and W8")
    par.add_argument("--plot", type=Path, help="PNG to draw the two frontiers in")
    par.add_argument("--json", action="store_true")
    par.set_defaults(handler=_pareto)

    i = commands.add_parser("info", help="describe an artifact")
    i.add_argument("artifact", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(handler=_info)

    from .costmodel.commands import add_commands

    add_commands(commands)

    p = commands.add_parser("passes", help="list registered passes and the default pipeline")
    p.add_argument("--target", default="host", help="the target whose default pipeline is shown")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_passes)
    return parser


def _model_arguments(p: argparse.ArgumentParser, artifact_ok: bool = False) -> None:
    p.add_argument("model", help="model.onnx, package.module:function, or a registered model name"
                   + (", or an artifact directory" if artifact_ok else ""))
    p.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="concrete shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--target", default="host", help="'host' or an LLVM target as JSON")
    p.add_argument("--passes", help="pipeline spec: a TOML file or a comma-separated list of pass names")
    p.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials in all (0: no tuning)")
    p.add_argument("--work-dir", type=Path, help="tuning database directory, reused by later compiles")
    p.add_argument("--quantize", choices=["w8a8", "w4a8", "w4a4"],
                   help="quantize with this scheme to integer arithmetic (needs --calib)")
    p.add_argument("--group-size", type=int, choices=[32, 64, 128], metavar="32|64|128",
                   help="4-bit weights with a scale per group of this many reduction elements (matmuls)")
    p.add_argument("--calib", type=Path, help=".npz of calibration samples, stacked per input name")
    p.add_argument("--bits", choices=["auto"], help="choose 4/8 weight bits per layer by ILP (needs a budget)")
    p.add_argument("--max-size", type=_bytes, help="weight-size budget for --bits auto, e.g. 15KB or 3MB")
    p.add_argument("--max-bops", type=float, help="BOPs budget for --bits auto (MACs x weight bits x act bits)")
    p.add_argument("--max-latency", type=_millis, metavar="MS",
                   help="latency budget for --bits auto, e.g. 2.5ms (each layer's time at 4 and 8 bits predicted "
                        "by the cost model for this CPU, or measured: --latency-model)")
    p.add_argument("--latency-model", default="auto", metavar="auto|measure|PATH",
                   help="where --max-latency's layer times come from: auto (the shipped cost model when it was "
                        "trained on this CPU and these kernels, else measured), measure, or a cost model file")
    p.add_argument("--layer-precision", choices=["int8", "auto"], default="int8",
                   help="auto: keep in float each layer whose integer kernel (with the island's conversions) is "
                        "slower than its float one, by the cost model or measured (--latency-model)")
    p.add_argument("--observer", default="minmax", choices=["minmax", "percentile", "entropy", "mse"])
    p.add_argument("--smoothing", type=_smoothing, metavar="ALPHA|auto",
                   help="SmoothQuant before calibration where a LayerNorm feeds linears only: migration "
                        "strength in (0, 1), or auto (chosen on the calibration samples)")
    p.add_argument("--float-ops", type=_float_ops, default=(), metavar="softmax,layer_norm",
                   help="keep these ops as float islands although they have an integer form")
    p.add_argument("--integer-only", choices=["islands", "strict"], default="islands",
                   help="strict: refuse a quantized model with any float island (default: declared islands allowed)")
    p.add_argument("--verify", action="store_true", help="check well-formedness after every pass")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")


def _islands_text(quantization: dict) -> str:
    """The float islands of a quantized manifest, by op ("nn.softmax x6, ...") and by reason, or "none"."""
    counts = quantization["float_islands"].items()
    ops = ", ".join(f"{op.removeprefix('relax.')} x{n}" for op, n in counts)
    reasons = "; ".join(f"{n} x {why}" for why, n in quantization.get("float_island_reasons", {}).items())
    return f"{ops} (why: {reasons})" if ops and reasons else ops or "none"


def _bytes(text: str) -> float:
    """'15KB', '3MB', '2048' -> bytes (decimal units)."""
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _millis(text: str) -> float:
    """'2.5ms', '0.3s', '2.5' (ms) -> milliseconds."""
    text = text.strip().lower()
    try:
        if text.endswith("ms"):
            return float(text[:-2])
        if text.endswith("s"):
            return float(text[:-1]) * 1e3
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 2.5ms or 0.1s, got {text!r}") from None


def _policy(args: argparse.Namespace):
    """The ``QuantPolicy`` of --quantize, --observer and --group-size."""
    from passes.quant_policy import QuantPolicy

    return QuantPolicy.from_scheme(args.quantize or "w8a8", args.observer, weight_group=args.group_size)


def _compile_model(args: argparse.Namespace, quantized: bool = True):
    """Compile the model the arguments name (in float when ``quantized`` is False, whatever they ask)."""
    from . import api
    from .sources import resolve

    source = resolve(args.model)
    passes = args.passes
    if passes and not passes.endswith(".toml"):
        passes = [name.strip() for name in passes.split(",") if name.strip()]
    policy = None
    if quantized and (args.quantize or args.bits):
        policy = _policy(args)
        if args.smoothing is not None:
            policy = dataclasses.replace(policy, smoothing=args.smoothing)
        if getattr(args, "float_ops", ()):
            policy = dataclasses.replace(policy, float_ops=args.float_ops)
    compiled = api.compile(source, shapes=_shapes(args.shape), target=_target(args), passes=passes,
                           tune_trials=args.tune_trials, work_dir=args.work_dir, verify=args.verify,
                           oracle=quantized and getattr(args, "oracle", False),
                           integer_only=getattr(args, "integer_only", "islands"),
                           quantize=policy, calibration=args.calib if quantized else None,
                           bits=args.bits if quantized else None, max_size=args.max_size, max_bops=args.max_bops,
                           max_latency=args.max_latency, latency_model=getattr(args, "latency_model", "auto"),
                           layer_precision=getattr(args, "layer_precision", "int8") if quantized else "int8",
                           progress=not args.quiet and sys.stderr.isatty())
    return compiled, source


def _compile(args: argparse.Namespace) -> int:
    compiled, _ = _compile_model(args)
    path = compiled.save(args.output)
    m = compiled.manifest
    before = f" from {m['kernels_before_fusion']} before fusion" if m.get("kernels_before_fusion") else ""
    print(f"wrote {path}/ ({m['library']['bytes'] / 1e6:.1f} MB, {m['kernels']} kernels{before}, "
          f"compiled in {m['compile_seconds']:.1f} s)")
    quantization = m.get("quantization")
    if quantization:
        islands = _islands_text(quantization)
        print(f"integer-only check passed; {len(quantization['layers'])} quantized layers; "
              f"float islands: {islands}")
        oracle = quantization.get("oracle")
        if oracle:
            worst = oracle["worst"] or {}
            print(f"oracle passed on {oracle['samples']} samples: {oracle['ops_within_bound']}/{oracle['ops']} ops "
                  f"within bound (worst {worst.get('anchor')} {worst.get('max_diff')}/{worst.get('bound')} LSB), "
                  f"SQNR {oracle['sqnr_db']:.1f} dB vs the QDQ simulation")
        allocation = quantization.get("bit_allocation")
        if allocation:
            chosen = ", ".join(f"{name} W{bits}" for name, bits in allocation["weight_bits"].items())
            predicted = allocation.get("predicted_latency_ms")
            latency = "" if predicted is None else f", predicted {predicted:.3f} ms, layer times " \
                f"{allocation['latency_source']}"
            print(f"bits chosen by ILP ({allocation['size_bytes'] / 1e3:.1f} KB of weights{latency}; sensitivity "
                  f"{allocation['sensitivity_seconds']:.1f} s, solver {allocation['solve_seconds'] * 1e3:.1f} ms): {chosen}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from .errors import CompilerError

    if args.work_dir is None:
        raise CompilerError("tune needs --work-dir DIR to keep its databases in")
    if args.trials < 1:
        raise CompilerError(f"--trials must be >= 1, got {args.trials}")
    args.tune_trials = args.trials
    compiled, _ = _compile_model(args)
    tuning = compiled.manifest["tuning"]
    print(f"tuned in {compiled.manifest['compile_seconds']:.1f} s: int8 kernels {tuning.get('int8_kernels', 0)} "
          f"(tiles searched now {tuning.get('int8_tuned', 0)} in {tuning.get('int8_trials', 0)} trials, from the "
          f"database {tuning.get('int8_reused', 0)}); other kernels tuned now {tuning.get('tuned', 0)}, from the "
          f"database {tuning.get('reused', 0)}, untuned {tuning.get('untuned', 0)}; databases in {args.work_dir}")
    if args.output:
        print(f"wrote {compiled.save(args.output)}/")
    return 0


def _npz_inputs(path: Path) -> dict[str, np.ndarray]:
    from .errors import read_npz

    return read_npz(path)


def _run(args: argparse.Namespace) -> int:
    from .executable import load

    compiled = load(args.artifact)
    outputs = compiled.run(_npz_inputs(args.input))
    if args.output:
        _savez_atomically(args.output, outputs)
        print(f"wrote {args.output} ({', '.join(outputs)})")
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {list(value.shape)} {value.dtype}, mean {value.mean():.6g}, "
                  f"argmax {int(value.argmax())}")
    return 0


def _savez_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary sibling renamed into place: a failure leaves no partial file."""
    import tempfile

    path = Path(path) if str(path).endswith(".npz") else Path(f"{path}.npz")  # np.savez's own naming
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _profile(args: argparse.Namespace) -> int:
    from .executable import load
    from .profile import profile

    compiled = load(args.artifact)
    report = profile(compiled, _npz_inputs(args.input) if args.input else None, repeat=args.repeat,
                     warmup=args.warmup)
    print(json.dumps(report.to_json(), indent=1) if args.json else report.text(None if args.all else 25))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench
    from .executable import load

    if args.model == "peak":
        return _bench_peak(args)
    float_model, calibration = None, None
    if Path(args.model).is_dir():
        compiled = load(args.model)
        spec = compiled.manifest["source"]
        source = _source_of(spec)
        name = spec.get("model") or spec.get("function") or Path(spec.get("path", args.model)).stem
    else:
        compiled, source = _compile_model(args)
        name = Path(args.model).stem if args.model.endswith(".onnx") else args.model
        if compiled.manifest.get("quantization") and not args.no_peers:  # the same model in float, and
            float_model = _compile_model(args, quantized=False)[0]       # onnxruntime int8 on the same samples
            calibration = _calibration_samples(args, compiled)
    rows = bench(compiled, source, model_name=name, warmup=args.warmup, repeat=args.repeat,
                 threads=args.threads, peers=not args.no_peers, float_model=float_model, calibration=calibration,
                 rounds=args.rounds,
                 on_engine=None if args.json else lambda e: print(f"warming up {e} ...", file=sys.stderr))
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        _print_table(f"{name}: batch 1, {args.repeat} runs after {args.warmup} warm-up, in {args.rounds} "
                     "rounds interleaved across engines",
                     ["engine", "precision", "median ms", "p90 ms", "peer / qc"],
                     [[r.engine, r.precision, f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}",
                       "-" if r.ratio_vs_qc is None else f"{r.ratio_vs_qc:.3f}"] for r in rows])
    return 0


def _calibration_samples(args: argparse.Namespace, compiled) -> list[dict[str, np.ndarray]]:
    from .quantization.calibration import samples_from_npz

    return list(samples_from_npz(args.calib, compiled.inputs))


def _bench_peak(args: argparse.Namespace) -> int:
    """This machine's int8 (VNNI) and fp32 (FMA) peak, measured by microkernels."""
    from backends import host_target
    from backends.peak import measure_peak

    peak = measure_peak(host_target(args.threads))
    if args.json:
        print(json.dumps(peak.to_json(), indent=2))
        return 0
    int8 = "no AVX-512 VNNI" if peak.int8_gops is None else f"{peak.int8_gops:.1f}"
    rows = [["int8 dot products", peak.int8_instruction or "-", int8],
            ["fp32 multiply-add", peak.fp32_instruction, f"{peak.fp32_gflops:.1f}"]]
    if peak.amx_int8_gops is not None:
        rows.insert(1, ["int8 on AMX tiles", "tdpbusd", f"{peak.amx_int8_gops:.1f}"])
    _print_table(f"peak of this CPU, {peak.cores} threads", ["arithmetic", "instruction", "GOP/s"], rows)
    return 0


def _float_ops(text: str) -> tuple[str, ...]:
    """--float-ops: comma-separated op names (``QuantPolicy`` checks them against ``FLOAT_OPS``)."""
    return tuple(op.strip() for op in text.split(",") if op.strip())


def _smoothing(text: str) -> float | str:
    """--smoothing: "auto" or a number (``QuantPolicy`` checks that it lies in (0, 1))."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or auto, got {text!r}") from None


def _format_report(args: argparse.Namespace) -> int:
    from . import api
    from .errors import CompilerError
    from .quantization.formats import get_format
    from .quantization.report import format_report, plot_formats
    from .sources import resolve

    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    for name in formats:
        get_format(name)  # an unknown name fails before the model is read
    if not args.calib:
        raise CompilerError("report --formats needs --calib SAMPLES.npz (the inputs the layers are measured on)")
    imported = api.import_model(resolve(args.model), shapes=_shapes(args.shape))
    report = format_report(imported, args.calib, formats)
    if args.plot:
        plot_formats(report, args.plot, f"{args.model}: number formats, each layer alone and the whole model")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    rows = [[r.layer, r.op, *(f"{r.sqnr_db[name]:.2f}" for name in formats)] for r in report.layers]
    rows.append(["whole model", "outputs", *(f"{report.model_sqnr_db[name]:.2f}" for name in formats)])
    _print_table(f"{args.model}: SQNR dB of each layer's output with its weight and input in the format; "
                 "last row: every layer in it", ["layer", "op", *formats], rows)
    return 0


def _report(args: argparse.Namespace) -> int:
    from . import api
    from .errors import CompilerError
    from .quantization.report import layer_report
    from .sources import resolve

    if args.formats:
        return _format_report(args)
    if not args.quantize or not args.calib:
        raise CompilerError("report needs --quantize SCHEME and --calib CALIB.npz")
    imported = api.import_model(resolve(args.model), shapes=_shapes(args.shape))
    rows = layer_report(imported, args.calib, _policy(args))
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return 0
    _print_table(f"{args.model}: {args.quantize}, per-layer SQNR vs float (worst first)",
                 ["layer", "W bits", "A bits", "observer", "input range", "SQNR dB"],
                 [[r.layer, str(r.weight_bits), str(r.activation_bits), r.observer,
                   f"[{r.input_range[0]:.4g}, {r.input_range[1]:.4g}]", f"{r.sqnr_db:.2f}"] for r in rows])
    return 0


def _verify(args: argparse.Namespace) -> int:
    from . import api
    from .errors import CompilerError
    from .quantization.calibration import samples_from_npz
    from .quantization.oracle import verify
    from .sources import resolve

    if not args.quantize or not args.calib:
        raise CompilerError("verify needs --quantize SCHEME and --calib CALIB.npz")
    if args.samples < 1:
        raise CompilerError(f"--samples must be >= 1, got {args.samples}")
    imported = api.import_model(resolve(args.model), shapes=_shapes(args.shape))
    samples = list(samples_from_npz(args.calib, imported.inputs))
    report = verify(imported, samples, _policy(args), _target(args),
                    max_samples=args.samples)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(f"{args.model}: {args.quantize}, integer executable vs QDQ simulation per op (worst first)",
                     ["anchor", "layer", "producer", "bound LSB", "max |diff|", "out of bound", "elements"],
                     [[r.anchor, r.layer, r.producer, str(r.bound), str(r.max_diff), str(r.out_of_bound),
                       str(r.elements)] for r in report.worst_first()])
        print(report.summary())
    return 0 if report.ok else 1


def _pareto(args: argparse.Namespace) -> int:
    from . import api
    from .quantization.calibration import samples_from_npz
    from .errors import CompilerError
    from .quantization.pareto import pareto_sweep, plot, table_rows
    from .sources import resolve

    if not args.calib:
        raise CompilerError("pareto needs --calib CALIB.npz")
    imported = api.import_model(resolve(args.model), shapes=_shapes(args.shape))
    calibration = list(samples_from_npz(args.calib, imported.inputs))
    if args.eval:
        evaluation = list(samples_from_npz(args.eval, imported.inputs))
    else:  # never score on what was calibrated on
        if len(calibration) < 2:
            raise CompilerError(f"{args.calib} holds {len(calibration)} sample(s); without --eval, pareto holds "
                                "out half of --calib for evaluation and needs at least 2")
        order = np.random.default_rng(0).permutation(len(calibration))
        half = len(calibration) // 2
        evaluation = [calibration[i] for i in sorted(order[:half])]
        calibration = [calibration[i] for i in sorted(order[half:])]
        print(f"no --eval: evaluating on {len(evaluation)} of the {len(calibration) + len(evaluation)} --calib "
              f"samples (a seeded half), calibrating on the other {len(calibration)}", file=sys.stderr)
    points = pareto_sweep(imported, calibration, evaluation, budgets=args.points, max_latency=args.max_latency,
                          observer=args.observer, target=_target(args), work_dir=args.work_dir,
                          on_point=lambda label: print(f"compiling {label} ...", file=sys.stderr))
    if args.plot:
        plot(points, args.plot, title=f"{args.model}: mixed precision, W?A8 {args.observer}")
    if args.json:
        print(json.dumps([p.to_json() for p in points], indent=2))
    else:
        header, rows = table_rows(points)
        _print_table(f"{args.model}: mixed precision (W?A8, {args.observer}), quality vs float on "
                     f"{len(evaluation)} held-out samples", header, rows)
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _source_of(spec: dict[str, Any]):
    """Find an artifact's source again, for its peers; None when it is gone or was a ModelProto."""
    from .sources import resolve

    key = spec.get("model") or spec.get("function") or spec.get("path")
    if not key or (spec.get("path") and not Path(spec["path"]).is_file()):
        print("qc: note: the artifact's source model is not available; timing it alone", file=sys.stderr)
        return None
    return resolve(key)


def _info(args: argparse.Namespace) -> int:
    from .artifact import read_manifest

    manifest = read_manifest(args.artifact, verify=True)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    source = manifest["source"]
    print(f"artifact   {args.artifact}  (checksum ok)")
    print(f"source     {source.get('path') or source.get('model') or source.get('function') or source['kind']}")
    print(f"target     {json.dumps(manifest['target'])}")
    for kind in ("inputs", "outputs"):
        for t in manifest[kind]:
            print(f"{kind[:-1]:10s} {t['name']}: {t['dtype']}{t['shape']}")
    before = manifest.get("kernels_before_fusion")
    print(f"kernels    {manifest['kernels']}" + (f" (from {before} before fusion)" if before else ""))
    quantization = manifest.get("quantization")
    if quantization:
        layers = ", ".join(f"{name} W{spec['weight_bits']}A{spec['activation_bits']}"
                           for name, spec in quantization["layers"].items())
        print(f"quantized  {quantization['mode']}; {layers}")
        print(f"tensors    {len(quantization['tensors'])} with their own scale; "
              f"{quantization['calibration_samples']} calibration samples")
        islands = _islands_text(quantization)
        print(f"float islands {islands}")
    print(f"pipeline   {' -> '.join(step['pass'] for step in manifest['pipeline'])}")
    tuning = manifest.get("tuning")
    described = "none" if not tuning else (
        f"budget {tuning['budget']} trials; kernels tuned now {tuning.get('tuned', 0)}, from the database "
        f"{tuning.get('reused', '?')}, untuned {tuning.get('untuned', '?')}; database {tuning['work_dir']}")
    print(f"tuning     {described}")
    print(f"library    {manifest['library']['file']} {manifest['library']['bytes'] / 1e6:.1f} MB "
          f"sha256 {manifest['library']['sha256'][:16]}...")
    print(f"versions   {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}")
    return 0


def _passes(args: argparse.Namespace) -> int:
    from passes import registered_passes

    from .pipeline import BACKEND_LOWERING, QUANTIZED_PASSES, TARGET_INDEPENDENT_PASSES, default_passes

    infos = registered_passes()
    if args.json:
        print(json.dumps({"passes": [{"name": p.name, "contract": p.contract, "origin": p.origin} for p in infos],
                          "default_pipeline": list(default_passes(_target(args))),
                          "target_independent": list(TARGET_INDEPENDENT_PASSES),
                          "backend_lowering": {k: list(v) for k, v in BACKEND_LOWERING.items()},
                          "quantized_first": list(QUANTIZED_PASSES)}, indent=2))
        return 0
    _print_table("registered passes", ["name", "contract", "from"], [[p.name, p.contract, p.origin] for p in infos])
    print("default pipeline for this target: " + " -> ".join(default_passes(_target(args))))
    print("  = target-independent: " + " -> ".join(TARGET_INDEPENDENT_PASSES))
    for family, steps in BACKEND_LOWERING.items():
        print(f"  + {family} lowering: " + " -> ".join(steps))
    print("quantized models run first: " + " -> ".join(QUANTIZED_PASSES))
    return 0


def _target(args: argparse.Namespace) -> Any:
    """--target: 'host' or a JSON object."""
    if not args.target.strip().startswith("{"):
        return args.target
    from .errors import CompilerError

    try:
        return json.loads(args.target)
    except json.JSONDecodeError as exc:
        raise CompilerError(f"--target is not valid JSON ({exc.msg} at column {exc.colno}): {args.target}") from None


def _shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    from .errors import CompilerError

    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise CompilerError(f"--shape {item!r}: expected NAME=DIMxDIMx..., e.g. input=1x3x224x224") from None
    return shapes


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: no wrapping at 80 columns


if __name__ == "__main__":
    sys.exit(main())
