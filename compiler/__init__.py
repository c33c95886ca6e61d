"""qc: a quantizing deep-learning compiler on Apache TVM.

Public API: ``compile`` (model -> ``CompiledModel``), ``load`` (artifact -> ``CompiledModel``), ``run``,
``benchmark`` (latency against onnxruntime / PyTorch in one run), ``profile`` (per-kernel time against this
CPU's peak), ``Pipeline`` (the pass list).
"""

from .api import compile, import_model
from .bench import bench as benchmark
from .errors import USER_ERRORS, ArtifactError, CompilerError, InputError, PipelineSpecError
from .executable import CompiledModel, load, run
from .pipeline import DEFAULT_PASSES, Pipeline
from .profile import Profile, profile

__all__ = [
    "ArtifactError", "CompiledModel", "CompilerError", "DEFAULT_PASSES", "InputError", "Pipeline",
    "PipelineSpecError", "Profile", "USER_ERRORS", "benchmark", "compile", "import_model", "load", "profile", "run",
]
