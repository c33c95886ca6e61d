"""Records for the cost model: this backend's layer kernels compiled and timed, appended to a JSON-lines file.

    collect(store, run="1")                  # every source x scheme not yet in ``store`` for run "1"
    records = load_records(store)            # [Record] of this CPU and these kernel templates

Sources (``SOURCES``; 10 models, each a unit of leave-one-model-out, and a seeded sweep):

- the registry's models with their real weights: ResNet-18, EfficientNet-Lite0, EfficientNet-B0,
  MobileNetV3-Small, the MNIST CNN, MiniLM (sequence 128);
- random-weight architectures built from ``transformers`` configurations (no download): ResNet-50,
  MobileNetV2, ConvNeXt-Tiny, DistilBERT (sequence 128);
- ``SWEEP`` seeded chains of random layers (convolutions dense / pointwise / depthwise at random sizes and
  strides, some with a residual add; matmuls of random rows and widths): training data only.

Each source is compiled per scheme (``w8a8``, ``w4a8``: per-channel 4-bit weights, ``fp32``) as a real
compile makes it (untuned), and every layer kernel is timed alone (``layer_latency.layer_kernel_times``:
the kernel the VM calls with the arguments of one inference, median of at least 30 calls after warm-up,
more for short kernels), then the whole model (median of 30). A record keeps the layer's features
(``features.LayerShape``: nothing that needs a build), the median, the int8 and fp32 peaks measured just
before the source (a shared host's state shows in them) and the whole model's time with the graph
features of what runs outside the layer kernels. Records are keyed by the CPU (LLVM's name), the kernel
templates' hash (``template_hash``: the backend's schedule and layout sources) and a run label; a source
whose records exist for that key is skipped, so a stopped collection continues where it stopped and a
second run (``run="2"``, another process at another time) measures the same kernels again: the noise floor.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import CompilerError
from .features import graph_features, model_layers

SCHEMES = ("w8a8", "w4a8", "fp32")
SCHEME_BITS = {"w8a8": (8, 8), "w4a8": (4, 8), "fp32": (32, 32)}

TEMPLATE_FILES = ("backends/x86_packed.py", "backends/x86_depthwise.py", "backends/x86_amx.py",
                  "backends/x86_transpose.py", "backends/x86_high_product.py", "backends/cpu_default.py",
                  "backends/intrinsics.py", "backends/task_buffers.py", "passes/packed_layouts.py",
                  "passes/int4.py", "passes/pack_int8_layers.py", "passes/pack_float_layers.py",
                  "passes/lower_integer.py")
"""The sources whose change changes the kernels a record timed (``template_hash``)."""

ROOT = Path(__file__).resolve().parents[2]


class CostModelError(CompilerError):
    """No records or model for this CPU and these templates, an unknown source, a malformed store."""


def template_hash() -> str:
    """12 hex digits of the kernel templates' sources: records and models of other templates do not apply."""
    digest = hashlib.sha256()
    for name in TEMPLATE_FILES:
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:12]


def cpu_name(target: Any = None) -> str:
    """LLVM's name for the target's CPU (``znver4``): one cost model per CPU family."""
    import backends

    return str(backends.parse_target(target).attrs.get("mcpu", "generic"))


@dataclass
class Record:
    """One layer kernel's median time (``layer``), or one whole model's (``layer`` None, ``graph`` set)."""

    cpu: str
    templates: str
    run: str
    source: str
    family: str          # "model" (held out as a unit) or "sweep" (training only)
    scheme: str
    layer: str | None
    key: str | None      # (op, shapes, widths): ``LayerShape.key``
    features: dict[str, float]
    ms: float
    peaks: dict[str, float]  # "int8" GOP/s and "fp32" GFLOP/s measured before the source
    graph: dict[str, float] = field(default_factory=dict)  # whole-model records: what runs outside the layers
    layers_ms: float = 0.0   # whole-model records: the layer kernels' sum in the same process

    def peak(self) -> float:
        """The peak this kernel is measured against: fp32 for float kernels, int8 for the rest."""
        return self.peaks["fp32"] if self.scheme == "fp32" else self.peaks["int8"]


@dataclass(frozen=True)
class Source:
    """A model to time: ``load()`` gives (torch module, example inputs as numpy, input names)."""

    name: str
    family: str
    load: Callable[[], tuple[Any, list[np.ndarray], list[str]]]

    def imported(self) -> tuple[Any, dict[str, np.ndarray]]:
        """(the float Relax import of the module, its example inputs by name)."""
        import torch

        from frontends import from_torch

        module, inputs, names = self.load()
        imported = from_torch(module, [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs], names)
        return imported, dict(zip(names, inputs))


def _registry(name: str) -> Source:
    def load():
        import models

        case = models.get(name)
        return case.module, [t.numpy() for t in case.example_inputs], list(case.input_names)
    return Source(name, "model", load)


def _transformers(name: str, build: Callable[[Any], tuple[Any, str]], text: bool = False) -> Source:
    def load():
        import torch
        import transformers

        torch.manual_seed(0)
        module, output = build(transformers)

        class Output(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module.eval()

            def forward(self, *args):
                return getattr(self.inner(*args), output)

        rng = np.random.default_rng(0)
        if text:
            return Output(), [rng.integers(0, 1000, (1, 128)).astype("int64"), np.ones((1, 128), "int64")], \
                ["input_ids", "attention_mask"]
        return Output(), [rng.standard_normal((1, 3, 224, 224)).astype("float32")], ["input"]
    return Source(name, "model", load)


SWEEP = 88
"""Sweep sources (``sweep-000`` ...). Seeds 0-23: even ones random convolution chains with ReLU, odd ones random
matmul chains with GELU; 24-63, in turn, inverted-residual blocks, convolution chains and matmul chains
whose activations are drawn too (none, ReLU, ReLU6, SiLU, hardswish, GELU); 64-87 wide layers (256-1024
channels at 7-28 pixels a side, matmuls of 768-4096), which the smaller chains never reach: a model's
largest layers are otherwise extrapolated."""

ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish", "gelu")


def _sweep(seed: int) -> Source:
    def load():
        import torch

        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        if seed < 24:
            build = _conv_chain if seed % 2 == 0 else _matmul_chain
        elif seed < 64:
            build = (_mobile_chain, _conv_chain, _matmul_chain)[seed % 3]
        else:
            build = _wide_conv_chain if seed % 2 == 0 else _wide_matmul_chain
        module, shape = build(torch, rng, drawn=seed >= 24)
        return module.eval(), [rng.standard_normal(shape).astype("float32")], ["input"]
    return Source(f"sweep-{seed:03d}", "sweep", load)


def _activation(rng: np.random.Generator, drawn: bool, default: str) -> str:
    return str(rng.choice(ACTIVATIONS)) if drawn else default


def _conv_chain(torch, rng: np.random.Generator, drawn: bool = False):
    """Four convolutions of random kind, width and stride on a random image size, an activation after each,
    a residual add where a layer keeps its input's shape (every other time)."""
    size = int(rng.choice([7, 14, 28, 56, 112]))
    channels = int(rng.choice([16, 24, 32, 64, 96, 128, 192, 256]))
    layers, shape = [], (1, channels, size, size)
    for _ in range(4):
        kind = rng.choice(["conv3", "pointwise", "depthwise3", "depthwise5", "conv3s2", "pointwise_wide"])
        stride = 2 if kind == "conv3s2" and size >= 14 else 1
        if kind.startswith("depthwise"):
            k = 3 if kind == "depthwise3" else 5
            layer = torch.nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels)
            out = channels
        else:
            out = int(rng.choice([16, 24, 32, 64, 96, 128, 192, 256, 384, 512]))
            k = 3 if kind.startswith("conv3") else 1
            while size * size * out * channels * k * k // (stride * stride) > 400e6 and out > 16:
                out //= 2
            layer = torch.nn.Conv2d(channels, out, k, stride, k // 2)
        residual = out == channels and stride == 1 and bool(rng.integers(2))
        layers.append((layer, residual, _activation(rng, drawn, "relu")))
        channels, size = out, size // stride
    return _Chain(torch, layers), shape


def _mobile_chain(torch, rng: np.random.Generator, drawn: bool = True):
    """Two inverted-residual blocks (1x1 expand, k x k depthwise at stride 1 or 2, 1x1 project, the block's
    input added where shapes allow), as MobileNetV2 / EfficientNet build them, at a random size, width,
    expansion, window and activation; the depthwise padding either in the convolution or as a pad of its
    own (as TensorFlow's "same" exports)."""
    size = int(rng.choice([7, 14, 28, 56, 112]))
    channels = int(rng.choice([16, 24, 32, 40, 64, 80, 96, 112, 160, 192]))
    blocks, shape = [], (1, channels, size, size)
    for _ in range(2):
        expanded = min(channels * int(rng.choice([1, 3, 4, 6])), 1152)
        k = int(rng.choice([3, 5, 7]))
        stride = 2 if size >= 14 and rng.integers(3) == 0 else 1
        act = _activation(rng, drawn, "relu")
        if rng.integers(2):
            depthwise = torch.nn.Conv2d(expanded, expanded, k, stride, k // 2, groups=expanded)
        else:
            depthwise = torch.nn.Sequential(torch.nn.ZeroPad2d(k // 2),
                                            torch.nn.Conv2d(expanded, expanded, k, stride, 0, groups=expanded))
        out = int(rng.choice([channels, channels, 2 * channels])) if stride == 1 else 2 * channels
        block = torch.nn.Sequential(torch.nn.Conv2d(channels, expanded, 1), _module(torch, act), depthwise,
                                    _module(torch, act), torch.nn.Conv2d(expanded, out, 1))
        blocks.append((block, out == channels and stride == 1, "none"))
        channels, size = out, -(-size // stride)
    return _Chain(torch, blocks), shape


def _wide_conv_chain(torch, rng: np.random.Generator, drawn: bool = True):
    """Three 3x3 (some strided) or 1x1 convolutions of 256-1024 channels at 7, 14 or 28 pixels a side."""
    size = int(rng.choice([7, 14, 28]))
    channels = int(rng.choice([256, 320, 384, 512, 640, 768, 1024]))
    layers, shape = [], (1, channels, size, size)
    for _ in range(3):
        kind = rng.choice(["conv3", "pointwise", "conv3s2"])
        stride = 2 if kind == "conv3s2" and size >= 14 else 1
        k = 1 if kind == "pointwise" else 3
        out = int(rng.choice([256, 320, 384, 512, 640, 768, 1024, 2048 if k == 1 else 1024]))
        while size * size * out * channels * k * k // (stride * stride) > 600e6 and out > 256:
            out //= 2
        residual = out == channels and stride == 1 and bool(rng.integers(2))
        layers.append((torch.nn.Conv2d(channels, out, k, stride, k // 2), residual, _activation(rng, drawn, "relu")))
        channels, size = out, -(-size // stride)
    return _Chain(torch, layers), shape


def _wide_matmul_chain(torch, rng: np.random.Generator, drawn: bool = True):
    """Two linears of 768-4096 inputs and outputs over 16-256 rows."""
    rows = int(rng.choice([16, 64, 128, 256]))
    width = int(rng.choice([768, 1024, 1536, 2048, 3072, 4096]))
    layers, shape = [], (1, rows, width)
    for _ in range(2):
        out = int(rng.choice([768, 1024, 1536, 2048, 3072, 4096]))
        layers.append((torch.nn.Linear(width, out), out == width and bool(rng.integers(2)),
                       _activation(rng, drawn, "gelu")))
        width = out
    return _Chain(torch, layers), shape


def _module(torch, activation: str):
    return {"none": torch.nn.Identity, "relu": torch.nn.ReLU, "relu6": torch.nn.ReLU6, "silu": torch.nn.SiLU,
            "hardswish": torch.nn.Hardswish, "gelu": torch.nn.GELU}[activation]()


def _matmul_chain(torch, rng: np.random.Generator, drawn: bool = False):
    """Three linears of random widths over random rows, an activation between, a residual add where widths
    allow."""
    rows = int(rng.choice([1, 8, 32, 64, 128, 256]))
    width = int(rng.choice([128, 256, 384, 512, 768, 1024]))
    layers, shape = [], (1, rows, width)
    for _ in range(3):
        out = int(rng.choice([128, 256, 384, 512, 768, 1024, 1536, 2048, 3072]))
        layers.append((torch.nn.Linear(width, out), out == width and bool(rng.integers(2)),
                       _activation(rng, drawn, "gelu")))
        width = out
    return _Chain(torch, layers), shape


def _Chain(torch, layers):  # noqa: N802  (a class built where torch is imported)
    functions = {"none": lambda x: x, "relu": torch.relu, "relu6": torch.nn.functional.relu6,
                 "silu": torch.nn.functional.silu, "hardswish": torch.nn.functional.hardswish,
                 "gelu": torch.nn.functional.gelu}

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(layer for layer, _, _ in layers)
            self.residual = [residual for _, residual, _ in layers]
            self.activations = [functions[name] for _, _, name in layers]

        def forward(self, x):
            for layer, residual, activation in zip(self.layers, self.residual, self.activations):
                y = activation(layer(x))
                x = x + y if residual else y
            return x
    return Chain()


def _architectures() -> list[Source]:
    return [
        _transformers("resnet50", lambda t: (t.ResNetModel(t.ResNetConfig()), "pooler_output")),
        _transformers("mobilenetv2", lambda t: (t.MobileNetV2Model(t.MobileNetV2Config()), "pooler_output")),
        _transformers("convnext-tiny", lambda t: (t.ConvNextModel(t.ConvNextConfig()), "pooler_output")),
        _transformers("distilbert", lambda t: (t.DistilBertModel(t.DistilBertConfig()), "last_hidden_state"),
                      text=True),
    ]


SOURCES: tuple[Source, ...] = (
    *(_registry(n) for n in ("resnet18", "efficientnet-lite0", "efficientnet-b0", "mobilenet-v3-small",
                             "mnist-cnn", "minilm")),
    *_architectures(),
    *(_sweep(seed) for seed in range(SWEEP)),
)


def sources(names: Sequence[str] | None = None) -> list[Source]:
    """The sources named (all when None); an unknown name raises ``CostModelError`` listing the valid ones."""
    if names is None:
        return list(SOURCES)
    known = {s.name: s for s in SOURCES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CostModelError(f"unknown cost-model source(s) {unknown}; valid: {', '.join(known)}")
    return [known[n] for n in names]


def default_store() -> Path:
    """``$QC_CACHE_DIR/costmodel/records.jsonl`` (default ``~/.cache/qc``)."""
    root = Path(os.environ.get("QC_CACHE_DIR") or Path.home() / ".cache" / "qc")
    return root / "costmodel" / "records.jsonl"


def load_records(store: str | Path | None = None, *, cpu: str | None = None,
                 templates: str | None = None) -> list[Record]:
    """The records in ``store`` for ``cpu`` (default: this CPU) and ``templates`` (default: the current hash);
    ``templates="*"`` keeps every hash."""
    path = Path(store or default_store())
    if not path.is_file():
        return []
    cpu, templates = cpu or cpu_name(), templates or template_hash()
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = Record(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as error:
            raise CostModelError(f"{path}:{number}: not a cost-model record ({error})") from None
        if record.cpu == cpu and templates in ("*", record.templates):
            records.append(record)
    return records


def collect(store: str | Path | None = None, *, run: str = "1", names: Sequence[str] | None = None,
            schemes: Sequence[str] = SCHEMES, target: Any = None,
            on_step: Callable[[str, int, int], None] | None = None) -> list[Record]:
    """Compile and time every (source, scheme) of ``names`` x ``schemes`` that ``store`` lacks for ``run``,
    appending each one's records as soon as it is timed; returns the records written."""
    import backends

    bad = [s for s in schemes if s not in SCHEME_BITS]
    if bad:
        raise CostModelError(f"unknown scheme(s) {bad}; valid: {', '.join(SCHEME_BITS)}")
    path = Path(store or default_store())
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu, templates = cpu_name(target), template_hash()
    done = {(r.source, r.scheme) for r in load_records(path, cpu=cpu, templates=templates) if r.run == run}
    work = [(source, scheme) for source in sources(names) for scheme in schemes if (source.name, scheme) not in done]
    target = backends.parse_target(target)
    written: list[Record] = []
    for index, (source, scheme) in enumerate(work):
        if on_step:
            on_step(f"{source.name} {scheme}", index, len(work))
        records = _time_source(source, scheme, target, cpu, templates, run)
        with path.open("a") as out:  # one source's records at once: a stop leaves none of it half-written
            out.write("".join(json.dumps(asdict(r)) + "\n" for r in records))
            out.flush()
            os.fsync(out.fileno())
        written += records
    if on_step:
        on_step("done", len(work), len(work))
    return written


def _time_source(source: Source, scheme: str, target, cpu: str, templates: str, run: str) -> list[Record]:
    from backends.peak import measure_peak

    from ..bench import median_ms
    from ..quantization.calibration import prepare
    from ..quantization.layer_latency import layer_kernel_times
    from ..quantization.quantize import compile_float, compile_quantized
    from passes.quant_policy import LayerSpec, QuantPolicy

    imported, sample = source.imported()
    weight_bits, activation_bits = SCHEME_BITS[scheme]
    if scheme == "fp32":
        model = compile_float(imported, target)
    else:
        model = compile_quantized(imported, [sample], QuantPolicy(LayerSpec(weight_bits, activation_bits, "minmax")),
                                  target)
    prepared = prepare(imported)
    layers = model_layers(prepared)
    peak = measure_peak(target)
    peaks = {"int8": float(peak.int8_gops or 0.0), "fp32": float(peak.fp32_gflops)}
    arrays = model.prepare(sample)
    kernels = layer_kernel_times(model, arrays, 5, 30)
    missing = [layer.name for layer in layers if layer.name not in kernels]
    if missing:
        raise CostModelError(f"{source.name} {scheme}: no kernel carries the name of layer(s) {missing[:5]}")
    whole = median_ms(lambda: model.call(arrays), 30, 5)
    base = {"cpu": cpu, "templates": templates, "run": run, "source": source.name, "family": source.family,
            "scheme": scheme, "peaks": peaks}
    records = [Record(**base, layer=layer.name, key=layer.key(weight_bits, activation_bits),
                      features=layer.features(weight_bits, activation_bits), ms=kernels[layer.name])
               for layer in layers]
    records.append(Record(**base, layer=None, key=None, features={}, ms=whole, graph=graph_features(prepared),
                          layers_ms=float(sum(kernels[layer.name] for layer in layers))))
    return records


def refresh_features(store: str | Path | None = None,
                     on_step: Callable[[str, int, int], None] | None = None) -> int:
    """Recompute every record's features and key from its source's graph (after ``features`` changed; no
    kernel is compiled or timed), rewriting ``store`` atomically; returns the records updated."""
    from ..quantization.calibration import prepare

    path = Path(store or default_store())
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    known = {s.name: s for s in SOURCES}
    names = sorted({line["source"] for line in lines if line["source"] in known})
    shapes: dict[str, tuple[dict, dict]] = {}
    for index, name in enumerate(names):
        if on_step:
            on_step(name, index, len(names))
        prepared = prepare(known[name].imported()[0])
        shapes[name] = ({layer.name: layer for layer in model_layers(prepared)}, graph_features(prepared))
    updated = 0
    for line in lines:
        if line["source"] not in shapes:
            continue
        layers, graph = shapes[line["source"]]
        weight_bits, activation_bits = SCHEME_BITS[line["scheme"]]
        if line["layer"] is None:
            line["graph"] = graph
        else:
            layer = layers[line["layer"]]
            line["features"] = layer.features(weight_bits, activation_bits)
            line["key"] = layer.key(weight_bits, activation_bits)
        updated += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tmp.replace(path)
    return updated


def summary(records: Iterable[Record]) -> dict[str, Any]:
    """Counts per run, source family and scheme (``qc costmodel info``)."""
    out: dict[str, Any] = {}
    for record in records:
        if record.layer is None:
            continue
        entry = out.setdefault(f"run {record.run}", {})
        entry[record.scheme] = entry.get(record.scheme, 0) + 1
    return out
