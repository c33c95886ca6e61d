"""Errors of the driver, and the tuple of every error a user can cause (the CLI prints these in one line)."""

from __future__ import annotations

from backends.errors import BackendError
from frontends.errors import FrontendError
from passes.observers import ObserverError
from passes.quant_policy import PolicyError
from passes.registry import PassError


class CompilerError(ValueError):
    """Base of the driver's own errors."""


class ArtifactError(CompilerError):
    """An artifact is missing, incomplete, from another format version, or was modified (checksum)."""


class InputError(CompilerError):
    """Inputs given at run time do not match the model's names, shapes or dtypes."""


class PipelineSpecError(CompilerError):
    """A pipeline spec (list or TOML file) is malformed or names a pass or position that does not exist."""


USER_ERRORS = (CompilerError, FrontendError, PassError, PolicyError, ObserverError, BackendError)
