"""The cost model: features read from the graph, float kernels named after their layers, resumable
collection, training and its file, leave-one-model-out, and the latency budget's switch between
prediction and measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compiler
from compiler.bench import qc_threads
from compiler.costmodel.collect import CostModelError, Record, collect, load_records, template_hash
from compiler.costmodel.features import OPS, model_layers
from compiler.costmodel.model import CostModel, Roofline, evaluate, for_target, ideal_ms
from compiler.quantization.calibration import prepare
from compiler.quantization.layer_latency import layer_kernel_times, predict_layer_latency

from .conftest import qc


class Block(torch.nn.Module):
    """A dense 3x3 conv, a depthwise 5x5 with a residual add, a strided pointwise conv with SiLU, a linear."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, 1, 1)
        self.depthwise = torch.nn.Conv2d(16, 16, 5, 1, 2, groups=16)
        self.pointwise = torch.nn.Conv2d(16, 32, 1, 2)
        self.linear = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x + torch.relu(self.depthwise(x))
        x = torch.nn.functional.silu(self.pointwise(x))
        return self.linear(x.mean((2, 3)))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    return compiler.import_model(Block().eval(), example_inputs=(x,), input_names=["input"]), x.numpy()


def test_features_read_each_layers_work_from_the_graph(block):
    imported, _ = block
    layers = {layer.name: layer for layer in model_layers(prepare(imported))}
    conv, depthwise, strided, linear = (layers[n] for n in ("conv2d_0", "conv2d_1", "conv2d_2", "matmul_0"))
    assert (conv.op, conv.m, conv.n, conv.k, conv.residual, conv.activation) == ("conv", 256, 16, 27, False, 1)
    assert (depthwise.op, depthwise.k, depthwise.groups, depthwise.residual) == ("depthwise", 25, 16, True)
    assert depthwise.activation == 1 and linear.activation == 0
    assert (strided.op, strided.m, strided.k, strided.stride) == ("conv", 64, 16, 2)  # 1x1 but strided
    assert strided.activation == 2  # SiLU: a transcendental in the epilogue
    assert (linear.op, linear.m, linear.n, linear.k) == ("matmul", 1, 10, 32)
    row = depthwise.features(4)
    assert row["op"] == OPS["depthwise"] and row["macs"] == 256 * 16 * 25 and row["weight_bytes"] == 16 * 25 / 2
    assert depthwise.features(32)["activation_bits"] == 32 and depthwise.features(32)["out_bytes"] == 256 * 16 * 4
    assert len({depthwise.key(4), depthwise.key(8), depthwise.key(32), conv.key(8)}) == 4


def test_a_float_models_kernels_carry_their_layers_names(block):
    imported, x = block
    model = compiler.compile(imported)
    times = layer_kernel_times(model, model.prepare({"input": x}), 1, 3)
    assert set(times) == {"conv2d_0", "conv2d_1", "conv2d_2", "matmul_0"}
    named = [entry for name, entry in model.manifest["kernel_info"].items() if "conv2d_2_f32" in name]
    assert len(named) == 1 and any("32x8x8" in arg for arg in named[0]["args"])  # conv2d_2 writes 32 x 8 x 8


def test_collection_appends_per_source_and_resumes(tmp_path):
    store = tmp_path / "records.jsonl"
    written = collect(store, names=["sweep-001"], schemes=["w8a8"])
    layers = [r for r in written if r.layer is not None]
    assert layers and all(r.ms > 0 and r.templates == template_hash() and r.peaks["int8"] > 0 for r in layers)
    whole = [r for r in written if r.layer is None]
    assert len(whole) == 1 and whole[0].graph["other_ops"] > 0 and whole[0].layers_ms > 0
    assert collect(store, names=["sweep-001"], schemes=["w8a8"]) == []  # done for run 1: nothing re-timed
    assert len(load_records(store)) == len(written)
    assert load_records(store, templates="another") == []
    with pytest.raises(CostModelError, match="unknown cost-model source"):
        collect(store, names=["sweep-999"])
    store.write_text(store.read_text() + "{not json\n")
    with pytest.raises(CostModelError, match=r"records.jsonl:\d+: not a cost-model record"):
        load_records(store)


def _synthetic(seed: int = 0) -> list[Record]:
    """Records of four 'models' whose kernels run at an efficiency that depends on op and size (plus 3% noise),
    two runs each, and whole-model records with a known overhead."""
    from compiler.costmodel.features import LayerShape

    rng = np.random.default_rng(seed)
    peaks = {"int8": 900.0, "fp32": 230.0}
    records = []
    for model in range(4):
        layers = [LayerShape(f"conv2d_{i}", str(rng.choice(["conv", "depthwise", "matmul"])),
                             int(rng.choice([49, 196, 784, 3136])), int(rng.choice([32, 64, 128, 256])),
                             int(rng.choice([9, 64, 288, 576]))) for i in range(30)]
        layers.append(LayerShape("conv2d_99", "conv", 196, 64, 576))  # shared by every model
        for run in ("1", "2"):
            total = 0.0
            for layer in layers:
                row = layer.features(8)
                efficiency = {"conv": 0.8, "depthwise": 0.1, "matmul": 0.6}[layer.op] * min(1.0, row["m"] / 400 + 0.3)
                ms = ideal_ms(row, peaks) / efficiency * float(np.exp(rng.normal(0, 0.03))) + 0.025
                total += ms
                records.append(Record("znver4", "t", run, f"m{model}", "model", "w8a8", layer.name, layer.key(8),
                                      row, ms, peaks))
            graph = {"other_ops": 20.0 + model, "elementwise_mbytes": 1.0 + model,
                     "transcendental_mbytes": 0.0, "move_mbytes": 0.0, "reduce_mbytes": 0.0}
            records.append(Record("znver4", "t", run, f"m{model}", "model", "w8a8", None, None, {},
                                  total + 0.05 * graph["elementwise_mbytes"] + 0.01 * graph["other_ops"], peaks, graph,
                                  total))
    return records


def test_the_model_learns_efficiency_saves_and_refuses_other_templates(tmp_path):
    records = _synthetic()
    model = CostModel.train(records, {"n_estimators": 200})
    layers = [r for r in records if r.layer is not None and r.run == "1"]
    predicted = model.predict_ms([r.features for r in layers])
    truth = np.array([r.ms for r in layers])
    assert np.median(np.abs(predicted / truth - 1)) < 0.1
    assert model.overhead["w8a8"][1] == pytest.approx(0.05, abs=0.02)  # ms per elementwise MB
    path = model.save(tmp_path / "m.json")
    assert CostModel.load(path).predict_ms([r.features for r in layers]) == pytest.approx(predicted)
    found, why = for_target(path=path)
    assert found is None and "kernel templates t" in why
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CostModelError, match="another format"):
        CostModel.load(tmp_path / "bad.json")
    with pytest.raises(CostModelError, match="several CPUs"):
        CostModel.train(records + [Record("znver3", "t", "1", "x", "model", "w8a8", "conv2d_0", "k",
                                          layers[0].features, 1.0, layers[0].peaks)])


def test_leave_one_model_out_drops_shared_kernels_and_reports_the_floor():
    records = _synthetic()
    results = evaluate(records, parameters={"n_estimators": 200})
    assert [r.source for r in results] == ["m0", "m1", "m2", "m3"]
    for held in results:
        assert held.dropped >= 2  # conv2d_99 of the three other models, both runs
        assert held.floor_mape is not None and held.floor_mape < 0.1
        assert held.mape < held.baseline_mape  # the learned model beats the per-op FLOPs baseline here
        assert held.whole["w8a8"]["error"] == pytest.approx(0.0, abs=0.15)
    baseline = Roofline.fit(r for r in records if r.layer is not None)
    assert baseline.efficiency[(OPS["depthwise"], 8)] < baseline.efficiency[(OPS["conv"], 8)]


def test_a_latency_table_predicted_without_compiling(block):
    imported, _ = block
    model = CostModel.train(_synthetic(), {"n_estimators": 50})
    table = predict_layer_latency(imported, model)
    assert set(table.layer_ms) == {(n, b) for n in ("conv2d_0", "conv2d_1", "conv2d_2", "matmul_0") for b in (4, 8)}
    assert all(v > 0 for v in table.layer_ms.values()) and table.overhead_ms > 0
    assert table.predict({n: 8 for n, _ in table.layer_ms}) == pytest.approx(table.uniform_ms[8])


def test_cli_costmodel_info_and_errors(tmp_path):
    env = {"QC_CACHE_DIR": str(tmp_path)}
    result = qc("costmodel", "info", "--json", env=env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["templates"] == template_hash() and "resnet18" in info["sources"]
    result = qc("costmodel", "train", "--store", str(tmp_path / "none.jsonl"), env=env)
    assert result.returncode == 2 and "no layer records" in result.stderr and result.stderr.count("\n") == 1
    from models import mnist_cnn

    np.savez(tmp_path / "calib.npz", input=mnist_cnn.load_split()[0][:4])
    result = qc("compile", "mnist-cnn", "--bits", "auto", "--max-latency", "1s", "--latency-model",
                str(tmp_path / "missing.json"), "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out"),
                env=env)
    assert result.returncode == 2 and "does not apply: no cost model" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("latency_model", ["auto", "measure"])
def test_layer_precision_auto_keeps_each_slower_layer_in_float(mnist_imported, latency_model):
    from models import mnist_cnn

    samples = [{"input": d[None]} for d in mnist_cnn.load_split()[0][:2]]
    with qc_threads(1):  # as test_bit_allocation's timing: a 2-thread pool stalls under the parallel run
        model = compiler.compile(mnist_imported, quantize="w8a8", calibration=samples, layer_precision="auto",
                                 latency_model=latency_model)
    quantization = model.manifest["quantization"]
    precision = quantization["layer_precision"]
    assert set(precision["per_layer_ms"]) == {"conv2d_0", "conv2d_1", "matmul_0"}
    assert precision["source"].startswith("measured" if latency_model == "measure" else ("predicted", "measured"))
    decided = set(precision["float_layers"]) | set(precision.get("rejected_float_layers", []))
    for name, (integer, floating, glue) in precision["per_layer_ms"].items():
        assert (name in decided) == (floating + glue < integer)  # measured: the whole-model check may reject
        assert (name in quantization["layers"]) == (name not in precision["float_layers"])
    with pytest.raises(compiler.CompilerError, match="layer_precision='auto' decides"):
        compiler.compile(mnist_imported, layer_precision="auto")


class SqueezeExcite(torch.nn.Module):
    """A 3x3 conv, then squeeze-excite: the mean of its map, two 1x1 convs, a sigmoid scaling the map."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, 1, 1)
        self.squeeze = torch.nn.Conv2d(32, 8, 1)
        self.expand = torch.nn.Conv2d(8, 32, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        scale = torch.sigmoid(self.expand(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return x * scale


def test_a_float_island_around_squeeze_excite_is_priced_at_the_feature_map():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    imported = compiler.import_model(SqueezeExcite().eval(), example_inputs=(x,), input_names=["input"])
    layers = {layer.name: layer for layer in model_layers(prepare(imported))}
    feature_map = 32 * 32 * 32 * 4  # float32 bytes
    assert layers["conv2d_1"].island_bytes == feature_map  # the squeeze reads the map's mean
    assert layers["conv2d_2"].island_bytes == feature_map  # the expand's sigmoid scales the map
    assert layers["conv2d_1"].features(8)["out_bytes"] == 8  # its own output: 8 bytes


@pytest.mark.parametrize("whole", [(1.0, 2.0), (2.0, 1.0)])
def test_measured_precision_keeps_float_layers_only_if_the_whole_model_is_faster(mnist_imported, monkeypatch, whole):
    import compiler.api as api
    import compiler.quantization.layer_latency as layer_latency
    from models import mnist_cnn

    calls = []

    def kernel_times(model, arrays, warmup, repeat):  # the int8 build first, then the float one, whose
        calls.append(model)                           # conv2d_1 "measures" faster than its int8 kernel
        return {"conv2d_0": 1.0, "conv2d_1": 0.5 if len(calls) == 2 else 1.0, "matmul_0": 1.0}

    monkeypatch.setattr(layer_latency, "layer_kernel_times", kernel_times)
    monkeypatch.setattr(api, "_alternating_ms", lambda models, sample: list(whole))
    samples = [{"input": d[None]} for d in mnist_cnn.load_split()[0][:2]]
    policy, record = api._precision(mnist_imported, "w8a8", samples, None, "measure", None)
    assert record["whole_ms"] == {"int8": whole[0], "with_float_layers": whole[1]}
    if whole[1] < whole[0]:  # faster with conv2d_1 in float: kept
        assert record["float_layers"] == ["conv2d_1"] and not policy.resolve(["conv2d_1"])["conv2d_1"].quantize
    else:
        assert record["float_layers"] == [] and record["rejected_float_layers"] == ["conv2d_1"]
        assert policy.resolve(["conv2d_1"])["conv2d_1"].quantize
