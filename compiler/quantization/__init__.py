"""The quantization workflow: calibrate, insert quantize/dequantize, choose bit widths, check the result.

    calibration      streaming observers over the anchor tensors of ``passes.quant_plan``
    quantize         calibration + ``insert_qdq`` (the QDQ model), its lowering and builds
    bit_allocation   per-layer sensitivity and the HAWQ-V3 ILP over weight widths
    layer_latency    per-layer kernel times at each width (the ILP's latency term)
    pareto           quality against size and latency over several allocations
    report           per-layer SQNR of the QDQ simulation against float
    reference        a numpy interpreter of Relax graphs (bit-exact check of the kernels)
    oracle           the per-op differential check of the lowering against the QDQ simulation

It depends on ``compiler``'s base modules (pipeline, build, executable, errors) and never on ``compiler.api``.
"""
