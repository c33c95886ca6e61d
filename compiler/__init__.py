"""qc: a quantizing deep-learning compiler on Apache TVM.

Public API: ``compile`` (model -> ``CompiledModel``), ``load`` (artifact -> ``CompiledModel``), ``run``,
``benchmark`` (latency against onnxruntime / PyTorch in one run), ``Pipeline`` (the pass list).
"""

from .api import compile, import_model
from .bench import bench as benchmark
from .errors import USER_ERRORS, ArtifactError, CompilerError, InputError, PipelineSpecError
from .executable import CompiledModel, load, run
from .pipeline import DEFAULT_PASSES, Pipeline

__all__ = [
    "ArtifactError", "CompiledModel", "CompilerError", "DEFAULT_PASSES", "InputError", "Pipeline",
    "PipelineSpecError", "USER_ERRORS", "benchmark", "compile", "import_model", "load", "run",
]
