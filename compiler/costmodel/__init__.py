"""The learned cost model: kernel latency predicted from a layer's features, without a build.

    features   what a layer's kernel does, read from the float graph (op, shapes, widths, residual)
    collect    compile and time the backend's layer kernels over models and a seeded sweep: JSON-lines records
    model      an xgboost regressor of kernel time per CPU family, leave-one-model-out evaluation against a
               roofline baseline, the whole model's time (layers + what runs outside them), the shipped
               models (``data/<cpu>.json``, with the records they were trained on)
    decide     int8 or float per layer from the predicted kernel times
    commands   ``qc costmodel collect | train | eval | info``

Its predictions feed ``compiler.quantization.layer_latency.predict_layer_latency`` (the ILP's latency term)
and ``compile(..., layer_precision="auto")``.

It depends on the quantization workflow (to compile what it times) and never on ``compiler.api``.
"""
