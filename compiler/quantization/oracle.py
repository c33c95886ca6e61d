"""The per-op differential oracle: the lowered integer executable against the QDQ float simulation.

    report = verify(imported, samples, "w8a8")      # quantize, lower, build twice, compare op by op
    print(report.summary()); check(report)          # OracleError naming the first op out of its bound

``reference.interpret`` replays the *lowered* graph, so it reproduces whatever the lowering got wrong; it
proves the kernels. This oracle proves the lowering (DESIGN.md section 2): it compares the compiled integer
executable with the module ``quantize`` returns, the QDQ simulation (float ops, a quantize -> dequantize pair
on every anchor, integer weights dequantized), which never went through ``lower_integer``.

1. The production build: ``build(lowered)`` with the default pipeline, as ``compiler.compile`` does.
2. The debug build: the same lowered module with every lowered integer tensor that ``lower_integer``
   mapped to a QDQ anchor (main's ``qc.anchor_values``) also returned, built the same way. Its PrimFuncs
   are compared with the production ones by ``tvm.ir.structural_hash`` (how many production kernels run
   unchanged in the debug build) and its model outputs with the production outputs, bit for bit.
3. Per op: for each sample, the debug build gives the integer value ``q_int`` of every anchor. The QDQ
   module then runs in ``reference.interpret`` with every anchor pinned to ``q_int``, so each op of the
   simulation reads exactly the integers the executable read, and what the simulation computes for the
   anchor itself (before the pin replaces it) is ``q_sim``. Per anchor, ``|q_int - q_sim|`` (int64) must
   stay within a bound derived from the QDQ graph alone:

       B = max(1, floor(0.5 + 0.5 * T + R / s + F / s))

   s the anchor's scale, found by walking the QDQ graph forward from the dequantized anchors and weights to
   the anchor's quantize:
       0.5        the simulation's own rounding (``quantize``: round half to even);
       0.5 * T    one rounding per integer rescale the lowering may apply: T = 1 for a layer, mean or
                  pooling, n for a residual add of n branches (a float op on the way counts as one:
                  a table or an integer product rescales once);
       R          roundings of constants onto an accumulator grid: the int32 bias (and any constant added
                  to an accumulator), 0.5 * max_o(s_x * s_w[o]) each;
       F          float32 error of the simulation, u = 2^-24, gamma_n = n*u / (1 - n*u):
                  conv2d / matmul  u * max|result| + gamma64_(K+2) * K * max|x| * max|w| (K = weight.size /
                                   out_channels, max|x| from the input's integer range, max|w| = max|W_q| *
                                   s_w): the interpreter sums in float64 (u64 = 2^-53) and rounds once
                  mean / pooling   gamma_n * max|x| over n elements;  add: u * max|result|
                  float islands (softmax, layernorm, GELU, products of activations ...), which both sides
                  compute in float32 (numpy here, TVM there): the input error times the op's gain
                  (1 for most, max|gamma| / min std for layernorm, K * max|other operand| for a matmul of
                  activations, max|exp| for exp) plus gamma_(n+8) * max|output| (n: its reduction length;
                  a matmul of activations: one rounding, as for conv2d / matmul),
                  the magnitudes measured on the sample, and counted twice (both sides round);
                  exp / erf / tanh / GELU / softmax add the error of ``passes.fast_math``'s approximations
                  (``MAX_RELATIVE_ERROR`` of the larger of input and output magnitude per approximated
                  result: ``APPROXIMATED``).
                  softmax (probabilities, at most 1): twice the input error + gamma_(n+8) + 3 MAX_RELATIVE_ERROR
                  + ``passes.integer_softmax.max_error(n)`` (the lowering's integer softmax, 0.18 LSB of a
                  1/255 grid at n = 128); an additive attention mask ``where(keep, 0, -big)`` adds nothing
                  (a dropped score is -inf-like on both sides).
                  Clamps (ReLU / clip) are 1-Lipschitz and add nothing.
4. End to end: the production outputs against the QDQ simulation run end to end (no pins) must reach
   SQNR >= ``MIN_SQNR_DB`` and cosine >= ``MIN_COSINE``. Measured with a correct lowering (2-4 samples):
   MNIST W8A8 73.5 dB, W4A8 61.9 dB (cosine 1.000000); MiniLM W8A8 19.5 dB, cosine 0.9943: in a
   transformer the two realisations of one quantized model drift apart by rounding flips that later
   layers amplify (each op stays within its bound). The floors (15 dB, 0.99) pass those with margin; the
   end-to-end check is a sanity floor, the per-op bound is the sharp check (a zero point off by one on
   MNIST still measures 35 dB end to end but fails per op at 2 LSB against a bound of 1).
   In a deep network that amplifies noise (MobileNetV3-Small and EfficientNet-B0 with random weights) one
   LSB flipped early makes the two realisations independent draws of the quantization noise: every op
   within its bound, yet 6.8 dB / cosine 0.904 apart on MobileNetV3-Small, each about as far from the float
   model as the other. So the end-to-end check also passes when the integer executable is no noisier
   than the simulation against the float model (after BatchNorm folding, run by the interpreter):
   SQNR(integer, float) >= SQNR(simulation, float) - ``MAX_EXTRA_NOISE_DB`` (3 dB: at most twice the noise
   power). A lowering bug (the ``c2(relu(c1(x)) + 1)`` miscompile: 55% off float against 0.9% for the
   simulation) fails both.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import tvm
from tvm import relax

from passes import quant_plan
from passes.fast_math import MAX_RELATIVE_ERROR
from passes import integer_layer_norm, integer_softmax
from passes.lower_integer import (ANCHOR_VALUES_ATTRIBUTE, FINE_VALUES_ATTRIBUTE, LAYER_NORM_GRIDS_ATTRIBUTE,
                                  is_additive_mask, layer_norm_keys)

from ..errors import CompilerError

MIN_SQNR_DB = 15.0
MIN_COSINE = 0.99
MAX_EXTRA_NOISE_DB = 3.0
U = 2.0**-24
U64 = 2.0**-53  # the reference interpreter sums conv2d / matmul products in float64
PASS_THROUGH = quant_plan.PASS_THROUGH | {"relax.broadcast_to", "relax.take", "relax.strided_slice", "relax.astype",
                                          "relax.split", "relax.concat"}
"""Ops that move values without adding error: the plan's integer pass-through ops and a few more."""
APPROXIMATED = {"relax.exp": 1, "relax.erf": 1, "relax.tanh": 1, "relax.nn.gelu": 1, "relax.nn.gelu_tanh": 1,
                "relax.nn.softmax": 3}
"""Results of ``passes.fast_math``'s approximations each op's output carries (softmax: its exps, their sum and
the quotient); each adds ``MAX_RELATIVE_ERROR`` of the larger of the op's input and output magnitudes."""
GAINS = {"relax.nn.softmax": 1.0, "relax.nn.gelu": 1.13, "relax.erf": 1.13, "relax.sigmoid": 0.25,
         "relax.tanh": 1.0, "relax.nn.silu": 1.1, "relax.nn.relu": 1.0, "relax.clip": 1.0}


class OracleError(CompilerError):
    """The lowered integer executable left its bound against the QDQ simulation."""


@dataclass
class OpRow:
    """One anchor: the QDQ integer tensor, the lowered one standing for it, and how far apart they were."""

    anchor: str  # the plan's name (conv2d_3, add_0, in:x ...)
    layer: str  # the layer it belongs to (a group) or feeds (an entry)
    producer: str  # the op whose result the anchor quantizes
    qdq: str  # variable names in the QDQ and the lowered module
    lowered: str | None
    bound: int  # LSBs (the largest over the samples)
    max_diff: int = 0
    out_of_bound: int = 0
    elements: int = 0  # compared, over all samples
    terms: int = 0

    @property
    def ok(self) -> bool:
        return self.lowered is not None and self.out_of_bound == 0


@dataclass
class Failure:
    """The first element out of bound, in program order of the anchors."""

    anchor: str
    layer: str
    sample: int
    index: tuple[int, ...]
    integer: int
    simulated: int
    bound: int

    def __str__(self) -> str:
        return (f"{self.anchor} (layer {self.layer}): sample {self.sample} at {list(self.index)}: integer "
                f"executable {self.integer}, QDQ simulation {self.simulated}, |diff| "
                f"{abs(self.integer - self.simulated)} > bound {self.bound}")


@dataclass
class OracleReport:
    """Per-op rows (program order), the first failure, end-to-end agreement and kernel identity."""

    policy: str
    samples: int
    rows: list[OpRow]
    first_failure: Failure | None
    sqnr_db: float
    cosine: float
    kernels: int  # production PrimFuncs
    kernels_identical: int  # of those, present unchanged in the debug build
    kernels_differing: list[str]
    debug_outputs_equal: bool
    seconds: float = 0.0
    unpaired: list[str] = field(default_factory=list)  # QDQ anchors the lowering did not map

    float_sqnr_db: float | None = None  # the integer executable against the float model
    simulation_float_sqnr_db: float | None = None  # the QDQ simulation against the float model

    @property
    def e2e_ok(self) -> bool:
        if self.sqnr_db >= MIN_SQNR_DB and self.cosine >= MIN_COSINE:
            return True
        return (self.float_sqnr_db is not None
                and self.float_sqnr_db >= self.simulation_float_sqnr_db - MAX_EXTRA_NOISE_DB)

    @property
    def ok(self) -> bool:
        return self.first_failure is None and not self.unpaired and self.e2e_ok

    def worst_first(self) -> list[OpRow]:
        return sorted(self.rows, key=lambda r: (-r.out_of_bound, -(r.max_diff / max(r.bound, 1)), r.anchor))

    def summary(self) -> str:
        worst = max(self.rows, key=lambda r: r.max_diff / max(r.bound, 1), default=None)
        lines = [f"oracle ({self.policy}, {self.samples} samples): "
                 f"{sum(r.ok for r in self.rows)}/{len(self.rows)} ops within bound"
                 + (f", worst {worst.anchor} {worst.max_diff}/{worst.bound} LSB" if worst else ""),
                 f"end to end vs the QDQ simulation: SQNR {self.sqnr_db:.1f} dB (floor {MIN_SQNR_DB:g}), cosine "
                 f"{self.cosine:.6f} (floor {MIN_COSINE:g})" + (
                     "" if self.float_sqnr_db is None else
                     f"; vs float: integer {self.float_sqnr_db:.1f} dB, simulation "
                     f"{self.simulation_float_sqnr_db:.1f} dB (at most {MAX_EXTRA_NOISE_DB:g} dB apart)"),
                 f"{self.kernels_identical}/{self.kernels} production kernels identical in the debug build"
                 + (f" (differing: {', '.join(self.kernels_differing)})" if self.kernels_differing else "")
                 + ("; debug outputs equal the production outputs bit for bit" if self.debug_outputs_equal
                    else "; debug outputs DIFFER from the production outputs")]
        if self.unpaired:
            lines.append(f"not mapped by the lowering: {', '.join(self.unpaired)}")
        if self.first_failure:
            lines.append(f"first op out of bound: {self.first_failure}")
        lines.append(f"verdict: {'PASS' if self.ok else 'FAIL'} ({self.seconds:.1f} s)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(ok=self.ok, e2e_ok=self.e2e_ok, min_sqnr_db=MIN_SQNR_DB, min_cosine=MIN_COSINE)
        if self.first_failure:
            out["first_failure"]["index"] = list(self.first_failure.index)
        return out

    def manifest(self) -> dict:
        """What the artifact's manifest records (``quantization.oracle``)."""
        worst = max(self.rows, key=lambda r: r.max_diff / max(r.bound, 1), default=None)
        return {"ok": self.ok, "samples": self.samples, "ops": len(self.rows),
                "ops_within_bound": sum(r.ok for r in self.rows),
                "worst": None if worst is None else {"anchor": worst.anchor, "max_diff": worst.max_diff,
                                                     "bound": worst.bound},
                "sqnr_db": round(self.sqnr_db, 2), "cosine": round(self.cosine, 6),
                "float_sqnr_db": None if self.float_sqnr_db is None else round(self.float_sqnr_db, 2),
                "simulation_float_sqnr_db": (None if self.simulation_float_sqnr_db is None
                                             else round(self.simulation_float_sqnr_db, 2)),
                "kernels_identical": f"{self.kernels_identical}/{self.kernels}",
                "seconds": round(self.seconds, 2)}


def check(report: OracleReport) -> OracleReport:
    """``report`` if it passed, else ``OracleError`` naming the first op out of bound with its values."""
    if report.ok:
        return report
    if report.first_failure is not None:
        raise OracleError(f"the lowered integer model leaves the QDQ simulation at {report.first_failure}")
    if report.unpaired:
        raise OracleError(f"the lowering mapped no integer tensor to QDQ anchor(s) {report.unpaired}")
    versus_float = ("" if report.float_sqnr_db is None else
                    f", and against the float model {report.float_sqnr_db:.1f} dB where the simulation has "
                    f"{report.simulation_float_sqnr_db:.1f} dB")
    raise OracleError(f"the integer model's outputs drift from the QDQ simulation: SQNR {report.sqnr_db:.1f} dB "
                      f"(floor {MIN_SQNR_DB:g}), cosine {report.cosine:.6f} (floor {MIN_COSINE:g}){versus_float}")


def verify(imported, samples: Iterable[Mapping[str, np.ndarray]], policy: Any = "w8a8", target: Any = None,
           max_samples: int | None = 4) -> OracleReport:
    """Quantize ``imported`` on ``samples`` with ``policy``, lower and build it, and run the oracle on the
    first ``max_samples`` samples (all with None)."""
    from ..build import build
    from .quantize import lower, quantize

    samples = list(samples)
    quantized = quantize(imported, samples, policy, target)
    lowered, _ = lower(quantized)
    production = build(lowered, target)
    return run_oracle(quantized, lowered, production, samples[:max_samples], target)


def run_oracle(quantized, lowered: tvm.IRModule, production, samples: Iterable[Mapping[str, np.ndarray]],
               target: Any = None, *, pipeline=None, tuning=None) -> OracleReport:
    """The oracle on a quantized model already lowered (``lowered``) and built (``production``, a ``Built``);
    the debug build uses ``pipeline`` and ``tuning`` as the production build did."""
    from ..build import build
    from ..executable import CompiledModel, flatten_result
    from .reference import exposing, interpret

    started = time.perf_counter()
    qdq = quantized.imported.mod
    attrs = lowered["main"].attrs
    found = attrs[ANCHOR_VALUES_ATTRIBUTE] if attrs and ANCHOR_VALUES_ATTRIBUTE in attrs else {}
    mapping = {str(k): str(v) for k, v in found.items()}
    grids = attrs[LAYER_NORM_GRIDS_ATTRIBUTE] if attrs and LAYER_NORM_GRIDS_ATTRIBUTE in attrs else {}
    grids = _by_variable(qdq, {str(k): float(v) for k, v in grids.items()})
    anchors = _anchors(qdq, quantized)
    fine = attrs[FINE_VALUES_ATTRIBUTE] if attrs and FINE_VALUES_ATTRIBUTE in attrs else {}
    anchors += _fine_anchors(qdq, {str(k): (str(v[0]), float(v[1])) for k, v in fine.items()}, mapping)
    lowered_names = [b.var.name for b in lowered["main"].body.blocks[0].bindings]
    wanted = sorted({mapping[a.qdq] for a in anchors if a.qdq in mapping}, key=lowered_names.index)
    debug = build(exposing(lowered, wanted), target, pipeline=pipeline, tuning=tuning)
    identical, differing, count = _kernel_identity(production.mod, debug.mod)
    run_production = CompiledModel(production.library, {"inputs": [], "outputs": []})
    run_debug = CompiledModel(debug.library, {"inputs": [], "outputs": []})

    rows = [OpRow(a.name, a.layer, a.producer, a.qdq, mapping.get(a.qdq), 1) for a in anchors]
    params = [p.name for p in qdq["main"].params]
    order = [s.name for s in quantized.imported.inputs]
    failure, outputs_equal, produced, simulated, floats, n = None, True, [], [], [], 0
    for index, sample in enumerate(samples):
        n += 1
        values = [sample[p] for p in params] if all(p in sample for p in params) else [sample[o] for o in order]
        arrays = [np.asarray(v) for v in values]
        inputs = dict(zip(params, arrays))
        prod = [t.numpy() for t in flatten_result(run_production.call([tvm.runtime.tensor(a) for a in arrays]))]
        leaves = [t.numpy() for t in flatten_result(run_debug.call([tvm.runtime.tensor(a) for a in arrays]))]
        exposed = dict(zip(wanted, leaves[len(leaves) - len(wanted):]))
        outputs_equal &= all(np.array_equal(a, b) for a, b in zip(prod, leaves))
        paired = [a for a in anchors if a.qdq in mapping]
        integers = {a.var: exposed[mapping[a.qdq]] for a in paired}
        overrides = {a.var: (integers[a.var] * np.float32(a.scale)).astype(np.float32) if a.fine
                     else integers[a.var] for a in paired}
        observed: dict = {}
        trace = interpret(qdq, inputs, overrides, observed)
        bounds = _bounds(qdq, anchors, trace.by_var, grids)
        for position, (anchor, row) in enumerate(zip(anchors, rows)):
            if anchor.var not in observed:
                continue
            q_int = integers[anchor.var].astype(np.int64)
            q_sim = np.asarray(observed[anchor.var])
            q_sim = np.round(q_sim.astype(np.float64) / anchor.scale).astype(np.int64) if anchor.fine else \
                q_sim.astype(np.int64)
            bound, row.terms = bounds[anchor.var]
            diff = np.abs(q_int - q_sim)
            row.bound = max(row.bound, bound)
            row.max_diff = max(row.max_diff, int(diff.max(initial=0)))
            bad = diff > bound
            row.out_of_bound += int(bad.sum())
            row.elements += diff.size
            if bad.any() and (failure is None or position < _position(anchors, failure)):
                at = tuple(int(i) for i in np.argwhere(bad)[0])
                failure = Failure(anchor.name, anchor.layer, index, at, int(q_int[at]), int(q_sim[at]), bound)
        produced.append(prod)
        simulated.append(interpret(qdq, inputs).outputs)
        if quantized.float_mod is not None:
            floats.append(interpret(quantized.float_mod, inputs).outputs)
    sqnr, cosine = _agreement(produced, simulated)
    float_sqnr = simulation_sqnr = None
    if floats:
        float_sqnr, simulation_sqnr = _agreement(produced, floats)[0], _agreement(simulated, floats)[0]
    unpaired = [a.name for a in anchors if a.qdq not in mapping]
    return OracleReport(_policy_text(quantized.policy), n, rows,
                        failure, sqnr, cosine, count, identical, differing, outputs_equal,
                        time.perf_counter() - started, unpaired, float_sqnr, simulation_sqnr)


def _position(anchors, failure: Failure) -> int:
    return next(i for i, a in enumerate(anchors) if a.name == failure.anchor)


def _policy_text(policy) -> str:
    d = getattr(policy, "default", None)
    if d is None:
        return str(policy)
    text = f"w{d.weight_bits}a{d.activation_bits}"
    return text + (f" + {len(policy.overrides)} override(s)" if getattr(policy, "overrides", None) else "")


# -- the anchors of the QDQ module --------------------------------------------------------------------------

@dataclass
class _Anchor:
    var: relax.Var  # the integer tensor a dequantize reads (quantize, or its clip for narrow widths)
    qdq: str  # its name (the key of qc.anchor_values)
    name: str  # the plan's name
    layer: str
    producer: str
    source: relax.Expr  # what the quantize reads
    scale: float
    zero: int
    fine: bool = False  # a float layernorm output of the simulation, paired with the lowering's fine grid


def _by_variable(qdq: tvm.IRModule, by_key: Mapping[str, float]) -> dict:
    """{QDQ layernorm variable: value} from {its ``layer_norm_keys`` name: value}."""
    return {var: by_key[key] for var, key in layer_norm_keys(qdq["main"]).items() if key in by_key}


def _fine_anchors(qdq: tvm.IRModule, fine: Mapping[str, tuple[str, float]], mapping: dict) -> list[_Anchor]:
    """The simulation's layernorm outputs that the lowering also holds on a fine int32 grid (``fine``: QDQ
    name -> (lowered name, grid)); ``mapping`` learns the pairs like the anchors' (pinned the same way, in
    real units)."""
    anchors = []
    for var, key in layer_norm_keys(qdq["main"]).items():
        if key in fine:
            lowered, grid = fine[key]
            mapping[key] = lowered
            anchors.append(_Anchor(var, key, f"{key}:fine", key, "nn.layer_norm", var, grid, 0, True))
    return anchors


def _anchors(qdq: tvm.IRModule, quantized) -> list[_Anchor]:
    from passes.dataflow import op_name

    bindings = qdq["main"].body.blocks[0].bindings
    values = {b.var: b.value for b in bindings}
    read = {b.value.args[0] for b in bindings
            if op_name(b.value) == "relax.dequantize" and isinstance(b.value.args[0], relax.Var)}
    names = _plan_names(bindings, quantized)
    readers: dict[str, list[str]] = {}
    for layer, anchor in quantized.calibration.layer_inputs.items():
        readers.setdefault(anchor, []).append(layer)
    anchors = []
    for b in bindings:
        if b.var not in read:
            continue
        q = b.var
        while op_name(values[q]) != "relax.quantize":  # the clip of a narrow width
            q = values[q].args[0]
        call = values[q]
        name = names.get(q, b.var.name)
        layer = name if not name.startswith("in:") else ", ".join(readers.get(name, [])) or name
        source = call.args[0]
        producer = (op_name(values[source]) or "value").removeprefix("relax.") if source in values else "input"
        anchors.append(_Anchor(b.var, b.var.name, name, layer, producer, source,
                               float(call.args[1].value.numpy()), int(call.args[2].value.numpy())))
    return anchors


def _plan_names(bindings, quantized) -> dict:
    """{QDQ quantize var: the plan's anchor name}: the plan's anchors are variables of the float module that
    ``insert_qdq`` quantized (the same variables in the QDQ module), each quantize reading one of them."""
    from passes.dataflow import op_name

    if quantized.float_mod is None:
        return {}
    plan = quant_plan.plan_quantization(quantized.float_mod["main"], quantized.calibration.specs)
    by_var = {anchor.var: anchor.name for anchor in plan.anchors.values()}
    return {b.var: by_var[b.value.args[0]] for b in bindings
            if op_name(b.value) == "relax.quantize" and b.value.args[0] in by_var}


# -- the bound ---------------------------------------------------------------------------------------------

@dataclass
class _Info:
    """What the walk knows of a float tensor of the simulation, in real units."""

    terms: int = 0  # integer rescales the lowering may apply before the next quantize
    rounding: float = 0.0  # constants rounded onto an accumulator grid
    float_err: float = 0.0  # float32 error of the simulation
    magnitude: float = 0.0  # bound on |value| (sum |x||w| for an accumulator)
    grid: float = 0.0  # the accumulator grid a constant would be rounded onto
    island: bool = False  # a float op (no integer form) on the way: both sides round in float


def _gamma(n: int, unit: float = U) -> float:
    return n * unit / (1 - n * unit)


def _bounds(qdq: tvm.IRModule, anchors: list[_Anchor], measured: Mapping[relax.Var, Any],
            grids: Mapping[relax.Var, float] | None = None) -> dict:
    """{anchor var: (bound in LSBs, integer rescale terms)} for one sample (islands use measured magnitudes;
    ``grids``: the input grid of each layernorm the lowering made integer, by its QDQ variable)."""
    from passes.dataflow import op_name

    info: dict[relax.Var, Any] = {}
    pinned = {a.var: a.scale for a in anchors if a.fine}
    own: dict[relax.Var, _Info] = {}  # a pinned value's own error, before the pin
    by_source = {}
    for a in anchors:
        by_source.setdefault(a.source, []).append(a)
    integers: dict[relax.Var, tuple[float, int, int]] = {}  # integer var -> (scale, zero, max |q - z|)
    for b in qdq["main"].body.blocks[0].bindings:
        var, value, name = b.var, b.value, op_name(b.value)
        args = list(getattr(value, "args", []))
        if name == "relax.quantize":
            dtype = np.iinfo(str(value.attrs.out_dtype))
            zero = int(value.args[2].value.numpy())
            integers[var] = (float(value.args[1].value.numpy()), zero, max(zero - dtype.min, dtype.max - zero))
            continue
        if name == "relax.clip" and args[0] in integers:
            scale, zero, _ = integers[args[0]]
            integers[var] = (scale, zero, max(zero - int(args[1].value), int(args[2].value) - zero))
            continue
        if name == "relax.dequantize" and isinstance(args[0], relax.Var) and args[0] in integers:
            scale, zero, peak = integers[args[0]]
            info[var] = _Info(1, 0.0, U * scale * peak, scale * peak, scale)
            continue
        if name == "relax.where" and is_additive_mask(value):
            info[var] = _MASK
            continue
        if name == "relax.dequantize":  # an integer weight
            w = args[0].value.numpy().astype(np.float64)
            s = value.args[1].value.numpy().astype(np.float64)
            info[var] = ("weight", w, s, int(value.attrs.axis))
            continue
        info[var] = _step(name, value, args, info, measured, var, grids or {})
        if var in pinned:  # downstream reads the lowering's own value of it, on its fine grid
            own[var] = info[var]
            magnitude = _abs_max(measured.get(var, 0.0))
            info[var] = _Info(1, 0.0, U * magnitude, magnitude, pinned[var])
    bounds = {}
    for a in anchors:
        x = own.get(a.source) if a.fine else info.get(a.source) if isinstance(a.source, relax.Var) else None
        if not isinstance(x, _Info):  # a model input or a constant: quantized the same way on both sides
            x = _Info(0, 0.0, 0.0, 0.0, 0.0, True)
        float_err = x.float_err * (2 if x.island else 1)
        total = 0.5 + 0.5 * x.terms + (x.rounding + float_err) / a.scale
        bounds[a.var] = (max(1, int(math.floor(total))), x.terms)
    return bounds


_MASK = "mask"
"""The walk's mark for an additive attention mask ``where(keep, 0, -big)`` (exact on both sides)."""


def _abs_max(value) -> float:
    value = np.asarray(value)
    return float(np.abs(value).max(initial=0.0)) if value.size and np.issubdtype(value.dtype, np.number) else 0.0


def _step(name: str | None, value: relax.Expr, args: list, info: dict, measured: Mapping, var,
          grids: Mapping[relax.Var, float]) -> _Info:
    """The walk's rule for one binding of the simulation."""
    ins = [info.get(a) if isinstance(a, relax.Var) else None for a in args]
    ins = [i if isinstance(i, _Info) else None for i in ins]
    weights = [info.get(a) for a in args if isinstance(a, relax.Var) and isinstance(info.get(a), tuple)]
    if name in ("relax.nn.conv2d", "relax.matmul") and weights and ins and ins[0] is not None:
        _, w, s, axis = weights[0]
        x = ins[0]
        out_channels = w.shape[axis]
        k = w.size // out_channels
        w_max = float(np.max(np.abs(w) * _along(s, axis, w.ndim)))
        magnitude = k * x.magnitude * w_max
        err = U * _abs_max(measured.get(var, magnitude)) + _gamma(k + 2, U64) * magnitude + \
            k * w_max * (x.float_err + x.rounding)
        return _Info(1, 0.0, err, magnitude, x.grid * float(np.max(s)), x.island)
    known = [i for i in ins if i is not None]
    if not known:  # computed from inputs and constants only: the same on both sides up to float rounding
        return _Info(0, 0.0, U * _abs_max(measured.get(var, 0.0)), _abs_max(measured.get(var, 0.0)), 0.0,
                     False) if name else _Info()
    constants = [a for a in args if isinstance(a, tvm.ir.expr.GenericConst)]
    if name == "relax.add" and len(known) == 1 and any(info.get(a) is _MASK for a in args):
        return known[0]  # a dropped score is -inf-like on both sides, a kept one gains an exact 0
    if name == "relax.add" and len(known) == 1 and constants:
        x = known[0]
        c = _abs_max(constants[0].value.numpy())
        return _Info(x.terms, x.rounding + 0.5 * x.grid, x.float_err + U * (x.magnitude + c), x.magnitude + c,
                     x.grid, x.island)
    if name == "relax.add" and len(known) == 2 and not any(i.island for i in known):
        a, b = known
        m = a.magnitude + b.magnitude
        return _Info(a.terms + b.terms, a.rounding + b.rounding, a.float_err + b.float_err + U * m, m,
                     max(a.grid, b.grid), False)
    if name in ("relax.nn.relu", "relax.clip") and not known[0].island:
        x = known[0]
        m = x.magnitude
        if name == "relax.clip":
            m = min(m, max(abs(float(args[1].value)), abs(float(args[2].value))))
        return _Info(x.terms, x.rounding, x.float_err, m, x.grid, x.island)
    if name in ("relax.mean", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d") and not known[0].island:
        x = known[0]
        n = max(1, int(np.prod(np.asarray(measured[args[0]]).shape)) // max(1, np.asarray(measured[var]).size))
        return _Info(max(1, x.terms), x.rounding, x.float_err + _gamma(n) * x.magnitude, x.magnitude,
                     x.grid / n, False)
    if name in PASS_THROUGH and len(known) == 1:
        return known[0]
    return _island(name, value, args, ins, measured, var, grids)


def _island(name, value, args, ins, measured, var, grids: Mapping[relax.Var, float]) -> _Info:
    """A float op with no integer form: its input error through the op's gain plus its own rounding."""
    errs = [(i.rounding + i.float_err) * (2 if i.island else 1) if i is not None else 0.0 for i in ins]
    mags = [_abs_max(measured[a]) if isinstance(a, relax.Var) and a in measured else
            _abs_max(a.value.numpy()) if isinstance(a, tvm.ir.expr.GenericConst) else 0.0 for a in args]
    out = measured.get(var)
    out_mag = _abs_max(out) if out is not None and not isinstance(out, tuple) else max(mags, default=0.0)
    n = 1
    if name == "relax.matmul":
        a, b = (np.asarray(measured[x]) if isinstance(x, relax.Var) else x.value.numpy() for x in args[:2])
        n = int(a.shape[-1])
        propagated = n * (mags[0] * errs[1] + mags[1] * errs[0])
        own = U * out_mag + _gamma(n + 2, U64) * n * mags[0] * mags[1]
    elif name == "relax.multiply":
        propagated = mags[1] * errs[0] + mags[0] * errs[1]
        own = U * out_mag
    elif name == "relax.divide":
        denominator = np.abs(np.asarray(measured[args[1]]) if isinstance(args[1], relax.Var)
                             else args[1].value.numpy())
        smallest = float(denominator.min(initial=np.inf)) or U
        propagated = errs[0] / smallest + mags[0] * errs[1] / smallest**2
        own = U * out_mag
    elif name == "relax.nn.layer_norm":
        x = np.asarray(measured[args[0]], np.float64)
        axes = tuple(int(a) % x.ndim for a in value.attrs.axes)
        n = int(np.prod([x.shape[a] for a in axes]))
        std = float(np.sqrt(x.var(axis=axes).min() + float(value.attrs.epsilon)))
        propagated = 2 * mags[1] / std * errs[0] + errs[1] + errs[2]
        own = _gamma(n + 8) * out_mag
        if var in grids:  # integer: the normalization's error on its grid, the fine output's half step
            gamma, beta = (np.asarray(measured[a]) if isinstance(a, relax.Var) else a.value.numpy() for a in args[1:3])
            own += mags[1] * integer_layer_norm.normalized_error(n, std / grids[var]) + \
                0.5 * integer_layer_norm.fine_grid(gamma, beta, n)
    elif name == "relax.exp":
        propagated = out_mag * errs[0]
        own = _gamma(8) * out_mag
    elif name == "relax.nn.softmax":  # probabilities <= 1: absolute errors
        n = int(np.asarray(measured[args[0]]).shape[int(value.attrs.axis)])
        propagated = 2 * errs[0]  # |dp_i| <= p_i (|dx_i| + sum_j p_j |dx_j|)
        own = _gamma(n + 8) + APPROXIMATED[name] * MAX_RELATIVE_ERROR + integer_softmax.max_error(n)
        return _Info(1, 0.0, propagated + own, 1.0, 0.0, True)
    elif name in ("relax.sum", "relax.mean"):
        x = np.asarray(measured[args[0]])
        n = max(1, x.size // max(1, np.asarray(out).size))
        propagated = (n if name == "relax.sum" else 1) * max(errs, default=0.0)
        own = _gamma(n + 8) * (n * mags[0] if name == "relax.sum" else max(out_mag, mags[0]))
    else:
        propagated = GAINS.get(name, 1.0) * sum(errs)
        own = _gamma(8) * out_mag
    own += APPROXIMATED.get(name, 0) * MAX_RELATIVE_ERROR * max(out_mag, max(mags, default=0.0))
    terms = 1 if any(i is not None and (i.terms or i.island) for i in ins) else 0
    return _Info(terms, 0.0, propagated + own, out_mag, 0.0, True)


def _along(s: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return s.reshape(shape) if s.size > 1 else s.reshape(())


# -- builds and outputs ------------------------------------------------------------------------------------

def _kernel_identity(production: tvm.IRModule, debug: tvm.IRModule) -> tuple[int, list[str], int]:
    """(production PrimFuncs found unchanged in the debug build, names of the others, production PrimFuncs)."""
    from tvm_ffi import structural_hash

    def kernels(mod):  # hashed without their symbol name: a kernel renamed by fusion is still the same code
        return {gv.name_hint: structural_hash(f.without_attr("global_symbol")) for gv, f in mod.functions.items()
                if isinstance(f, tvm.tirx.PrimFunc)}

    prod, dbg = kernels(production), set(kernels(debug).values())
    differing = sorted(name for name, h in prod.items() if h not in dbg)
    return len(prod) - len(differing), differing, len(prod)


def _agreement(produced: list[list[np.ndarray]], simulated: list[list[np.ndarray]]) -> tuple[float, float]:
    """The worst output's SQNR (dB) and cosine, each output's samples taken together."""
    if not produced:
        return math.inf, 1.0
    sqnr, cosine = math.inf, 1.0
    for k in range(len(simulated[0])):
        a = np.concatenate([np.asarray(p[k], np.float64).ravel() for p in produced])
        b = np.concatenate([np.asarray(s[k], np.float64).ravel() for s in simulated])
        noise = float(np.sum((a - b) ** 2))
        signal = float(np.sum(b**2))
        sqnr = min(sqnr, math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise))
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = min(cosine, float(a @ b) / norms if norms else float(np.array_equal(a, b)))
    return sqnr, cosine
