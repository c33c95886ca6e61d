"""The pass registry: every pass the pipeline can name, built in or added by a plugin.

A pass is a function ``(mod: tvm.IRModule, **options) -> tvm.IRModule`` registered under a unique name
with a one-line contract (its docstring's first line unless given). Installed packages add passes through
the entry-point group ``qc.passes``: the entry point's object is imported (which runs its
``@register_pass`` decorators); if it is itself a function not yet registered, it is registered under the
entry point's name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

import tvm

ENTRY_POINT_GROUP = "qc.passes"

PassFunction = Callable[..., tvm.IRModule]


class PassError(ValueError):
    """A pass is unknown, registered twice, misused, or failed on a module."""


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its name, function, one-line contract and the module that defined it."""

    name: str
    function: PassFunction
    contract: str
    origin: str

    def __call__(self, mod: tvm.IRModule, **options: Any) -> tvm.IRModule:
        result = self.function(mod, **options)
        if not isinstance(result, tvm.IRModule):
            raise PassError(f"pass '{self.name}' returned {type(result).__name__}, not a tvm.IRModule")
        return result


_PASSES: dict[str, PassInfo] = {}
_plugins_loaded = False


def register_pass(name: str | None = None, *, contract: str | None = None) -> Callable[[PassFunction], PassFunction]:
    """Decorator: register ``fn`` as a pass named ``name`` (default: the function's name)."""

    def decorate(fn: PassFunction) -> PassFunction:
        _add(PassInfo(name or fn.__name__, fn, contract or _first_doc_line(fn), fn.__module__))
        return fn

    return decorate


def get_pass(name: str) -> PassInfo:
    """The pass registered as ``name``; an unknown name raises ``PassError`` listing the known ones."""
    if name not in _PASSES:
        load_plugins()
    if name not in _PASSES:
        raise PassError(f"unknown pass '{name}'; registered passes: {', '.join(sorted(_PASSES))}")
    return _PASSES[name]


def registered_passes() -> list[PassInfo]:
    """All registered passes (plugins included), sorted by name."""
    load_plugins()
    return [_PASSES[n] for n in sorted(_PASSES)]


def load_plugins() -> None:
    """Import the passes that installed packages declare in the ``qc.passes`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = entry.load()
        except Exception as exc:
            raise PassError(f"plugin entry point '{entry.name} = {entry.value}' failed to load: {exc}") from exc
        if callable(obj) and not inspect.ismodule(obj) and entry.name not in _PASSES:
            _add(PassInfo(entry.name, obj, _first_doc_line(obj), entry.value))


def _add(info: PassInfo) -> None:
    previous = _PASSES.get(info.name)
    if previous is not None and previous.function is not info.function:
        raise PassError(f"pass '{info.name}' is already registered by {previous.origin}")
    _PASSES[info.name] = info


def _first_doc_line(fn: Callable) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no contract given)"
