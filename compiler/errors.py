"""Errors of the driver, and the tuple of every error a user can cause (the CLI prints these in one line)."""

from __future__ import annotations

from backends.errors import BackendError
from frontends.errors import FrontendError
from passes.dyadic import DyadicError
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


USER_ERRORS = (CompilerError, FrontendError, PassError, PolicyError, ObserverError, BackendError, DyadicError)


def read_npz(path, error: type[CompilerError] = InputError, what: str = "input") -> dict:
    """The arrays of the ``.npz`` file at ``path`` by name, or ``error`` in one line naming the file: missing,
    not an ``.npz`` (an ``.npy``, text), holding object (pickled) arrays, or unreadable."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise error(f"{path} is an .npy array, not an .npz; save the {what} with np.savez(path, name=array, "
                    "...) (one array per input name)")
    if not magic.startswith(b"PK"):
        raise error(f"{path} is not a readable .npz file (np.savez writes a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except CompilerError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise error(f"{path} holds object (pickled) arrays; {what} arrays must be numeric") from None
        raise error(f"{path} is not a readable .npz file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise error(f"{path} is not a readable .npz file: {exc}") from None
