"""Integer-only quantization on the three real models: accuracy, bit-exactness, the checker, fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import compiler
from compiler.pipeline import QUANTIZED_PASSES, Pipeline
from compiler.quantization.quantize import quantize
from compiler.quantization.reference import compare_with_compiled
from models import data, efficientnet_lite0, get, minilm, mnist_cnn
from passes import get_pass
from passes.check_integer_only import IntegerOnlyError, declared_islands, float_islands
from passes.quant_policy import LayerSpec, QuantPolicy


def _lowered(imported, samples, scheme="w8a8"):
    mod, _ = Pipeline(QUANTIZED_PASSES).run(quantize(imported, samples, scheme).imported.mod)
    return mod


def _ops(mod) -> set[str]:
    return {b.value.op.name for b in mod["main"].body.blocks[0].bindings if hasattr(b.value, "op")}


def _assert_bit_exact(lowered, samples, outputs_too=True):
    for agreement in compare_with_compiled(lowered, samples):
        assert agreement.integer_tensors > 0 and agreement.differing == []
        assert agreement.outputs_equal or not outputs_too


@pytest.fixture(scope="module")
def split():
    return mnist_cnn.load_split()


@pytest.mark.parametrize("scheme", ["w8a8", "w4a4"])
def test_mnist_integer_graph_has_no_float_and_matches_numpy_bit_for_bit(mnist_imported, split, scheme):
    x_train, _, x_test, _ = split
    lowered = _lowered(mnist_imported, [{"input": d[None]} for d in x_train[:32]], scheme)
    assert declared_islands(lowered) == {} and float_islands(lowered) == []
    assert {"relax.nn.conv2d", "relax.right_shift"} <= _ops(lowered)
    # 4-bit weights are int8 constants in [-8, 7] here; pack_int8_layers stores them two per byte (u8i4 kernels),
    # and the compiled library that the reference is compared with runs those kernels
    weights = [b.value.args[1].value.numpy() for b in lowered["main"].body.blocks[0].bindings
               if getattr(b.value, "op", None) is not None and b.value.op.name == "relax.nn.conv2d"]
    assert weights and all((np.abs(w.astype(np.int16)).max() <= 7) == (scheme == "w4a4") for w in weights)
    if scheme == "w4a4":
        packed = get_pass("pack_int8_layers")(lowered)
        assert any(str(g.name_hint).endswith("_u8i4") for g in packed.functions)
    _assert_bit_exact(lowered, [{"input": d[None]} for d in x_test[:3]])


@pytest.fixture(scope="module")
def photos():
    images = {k: efficientnet_lite0.preprocess(v) for k, v in data.photos().items()}
    calibration = [{"input": x} for x in images.values()] + [{"input": x[..., ::-1].copy()} for x in images.values()]
    return images, calibration


def test_efficientnet_int8_keeps_the_float_top1_and_is_integer_only(effnet_case, photos):
    images, calibration = photos
    model = compiler.compile(effnet_case.module, example_inputs=effnet_case.example_inputs,
                             input_names=effnet_case.input_names, quantize="w8a8", calibration=calibration)
    assert model.manifest["quantization"]["float_islands"] == {}
    assert model.manifest["kernels"] < model.manifest["kernels_before_fusion"]
    overlap = []
    for x in images.values():
        with torch.no_grad():
            reference = effnet_case.module(torch.from_numpy(x)).numpy()[0]
        logits = model.run(x)["output_0"][0]
        assert logits.argmax() == reference.argmax()
        overlap.append(len(set(np.argsort(logits)[-5:]) & set(np.argsort(reference)[-5:])))
    assert np.mean(overlap) >= 4


def test_efficientnet_integer_graph_matches_numpy_bit_for_bit(effnet_case, photos):
    images, calibration = photos
    imported = compiler.import_model(effnet_case.module, example_inputs=effnet_case.example_inputs,
                                     input_names=effnet_case.input_names)
    lowered = _lowered(imported, calibration)
    assert float_islands(lowered) == [] and declared_islands(lowered) == {}
    # residual adds (one dyadic multiplier per branch) and the global mean are integer too
    assert "relax.mean" not in _ops(lowered) and "relax.sum" in _ops(lowered)
    _assert_bit_exact(lowered, [{"input": x} for x in list(images.values())[:2]])


@pytest.fixture(scope="module")
def minilm_feeds():
    return [minilm.tokenize([s]) for s in data.sentences()]


def test_minilm_int8_embeddings_keep_cosine_and_pair_ranking(minilm_feeds):
    case = get("minilm")
    with torch.no_grad():
        ref = np.stack([case.module(*(torch.from_numpy(f[n]) for n in case.input_names)).numpy()[0]
                        for f in minilm_feeds])
    model = compiler.compile(case.module, example_inputs=case.example_inputs, input_names=case.input_names,
                             quantize="w8a8", calibration=minilm_feeds[:8])
    out = np.stack([model.run(f)["output_0"][0] for f in minilm_feeds])
    cosine = np.sum(ref * out, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert len(minilm_feeds) >= 20 and cosine.mean() >= 0.99
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    pairs = np.triu_indices(len(minilm_feeds), 1)
    similar_ref, similar_out = (unit(ref) @ unit(ref).T)[pairs], (unit(out) @ unit(out).T)[pairs]
    assert spearmanr(similar_ref, similar_out).correlation >= 0.98
    assert similar_out.argmax() == similar_ref.argmax()  # the most similar pair stays the most similar
    islands = model.manifest["quantization"]["float_islands"]
    assert "relax.nn.gelu" not in islands  # GELU reads an 8-bit tensor: a table
    # attention's Q x K^T and probabilities x V are integer matmuls, their operands' layout moves integer too,
    # the scores' 1/sqrt(d), mask and softmax are integer (passes.integer_softmax), and so are the layernorms
    # with the residual adds into them (passes.integer_layer_norm): only the masked mean pooling stays float
    # the masked mean pooling after the last integer tensor is the float epilogue, not an island
    assert islands == {}, islands


def test_minilm_integer_tensors_match_numpy_and_undeclared_float_fails_the_check(minilm_feeds):
    case = get("minilm")
    imported = compiler.import_model(case.module, example_inputs=case.example_inputs, input_names=case.input_names)
    lowered = _lowered(imported, minilm_feeds[:4])
    get_pass("check_integer_only")(lowered, strict=True)  # no float island at all
    # every integer tensor is exact, the integer softmax and layernorm kernels through their numpy twins
    _assert_bit_exact(lowered, minilm_feeds[:2], outputs_too=False)
    kept = QuantPolicy(overrides={"matmul_5": LayerSpec(quantize=False)})  # a float layer: an island
    lowered, _ = Pipeline(QUANTIZED_PASSES).run(quantize(imported, minilm_feeds[:4], kept).imported.mod)
    assert declared_islands(lowered).get("relax.matmul") == 1
    get_pass("check_integer_only")(lowered)
    undeclared = lowered.clone()
    undeclared["main"] = undeclared["main"].with_attr("qc.float_islands", [])
    with pytest.raises(IntegerOnlyError, match="float operation"):
        get_pass("check_integer_only")(undeclared)


class _Attention(torch.nn.Module):
    """One head of self-attention between two linears, as a transformer encoder computes it."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.width, dim=-1)
        scores = torch.softmax(q @ k.transpose(-1, -2) / self.width**0.5, dim=-1)
        return self.out(scores @ v)


def test_attention_matmuls_are_integer_unless_the_policy_keeps_them_in_float():
    from passes.quant_policy import LayerSpec, QuantPolicy

    torch.manual_seed(0)
    module = _Attention().eval()
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 10, 16)).astype(np.float32)} for _ in range(6)]
    imported = compiler.import_model(module, example_inputs=(torch.from_numpy(samples[0]["x"]),),
                                     input_names=["x"])
    quantized = quantize(imported, samples[:4], "w8a8")
    assert {"bmm_0", "bmm_1"} <= set(quantized.info["layers"])  # Q x K^T, probabilities x V
    # the probabilities are quantized on softmax's own range, not an observer's (percentile would clip them)
    (probabilities,) = [n for n, o in quantized.calibration.observers.items() if o == "range of relax.nn.softmax"]
    assert quantized.calibration.ranges[probabilities] == (0.0, 1.0)
    lowered, _ = Pipeline(QUANTIZED_PASSES).run(quantized.imported.mod)
    islands = declared_islands(lowered)
    assert "relax.matmul" not in islands and "relax.nn.softmax" not in islands  # passes/integer_softmax.py
    # Q x K^T (depth 16) runs on the uint8 x int8 kernel; probabilities x V (depth 10, not a multiple of 4)
    # stays an int32 matmul; the bit-exact check runs both
    packed = get_pass("pack_int8_layers")(lowered)
    assert sum(str(g.name_hint).startswith("matmul_activations") for g in packed.functions) == 1
    _assert_bit_exact(lowered, samples[4:])
    kept = QuantPolicy(overrides={"bmm_*": LayerSpec(quantize=False)})
    lowered, _ = Pipeline(QUANTIZED_PASSES).run(quantize(imported, samples[:4], kept).imported.mod)
    assert declared_islands(lowered).get("relax.matmul") == 2
