"""qc: a quantizing deep-learning compiler on Apache TVM. Public API: ``compile``, ``load``, ``CompiledModel``."""

from .api import compile, import_model
from .errors import USER_ERRORS, ArtifactError, CompilerError, InputError, PipelineSpecError
from .executable import CompiledModel, load
from .pipeline import DEFAULT_PASSES, Pipeline

__all__ = [
    "ArtifactError", "CompiledModel", "CompilerError", "DEFAULT_PASSES", "InputError", "Pipeline",
    "PipelineSpecError", "USER_ERRORS", "compile", "import_model", "load",
]
