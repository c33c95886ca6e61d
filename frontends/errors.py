"""Errors raised while importing a model. Each names the offending file, input or operator."""

from __future__ import annotations


class FrontendError(ValueError):
    """A model could not be imported; the message says why and what to do."""


class ModelNotFoundError(FrontendError):
    """The model file does not exist."""


class InvalidModelError(FrontendError):
    """The file is not a (complete) model of the expected format."""


class UnsupportedOperatorError(FrontendError):
    """The model uses operators TVM cannot import; all of them are listed at once."""

    def __init__(self, unsupported: dict[str, list[str]]):
        self.unsupported = unsupported
        parts = [f"{op} (node{'s' if len(nodes) > 1 else ''} {', '.join(nodes[:3])}"
                 f"{', ...' if len(nodes) > 3 else ''})" for op, nodes in sorted(unsupported.items())]
        super().__init__(f"unsupported operator{'s' if len(parts) > 1 else ''}: {'; '.join(parts)}")


class MissingShapeError(FrontendError):
    """An input has symbolic dimensions and the user gave no concrete shape."""
