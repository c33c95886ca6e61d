"""What an importer hands to the compiler: the Relax module and the names, shapes and dtypes of its tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of static shape, as a user sees it (original, unsanitised names)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


@dataclass
class ImportedModel:
    """A float Relax module whose ``main`` takes ``inputs`` positionally and returns ``outputs``."""

    mod: tvm.IRModule
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: dict[str, Any] = field(default_factory=dict)


def output_specs(mod: tvm.IRModule, names: list[str] | None = None) -> list[TensorSpec]:
    """Flatten the return type of ``mod["main"]`` into tensor specs, named ``names`` or ``output_<i>``."""
    leaves = _flatten(mod["main"].ret_ty)
    if names is None or len(names) != len(leaves):
        names = [f"output_{i}" for i in range(len(leaves))]
    return [TensorSpec(n, shape, dtype) for n, (shape, dtype) in zip(names, leaves)]


def _flatten(ty) -> list[tuple[tuple[int, ...], str]]:
    if isinstance(ty, tvm.ir.TupleType):
        return [leaf for field_ in ty.fields for leaf in _flatten(field_)]
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        dims = tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else -1 for d in ty.shape.values)
        return [(dims, str(ty.dtype))]
    raise TypeError(f"model output of type {ty} is not a tensor of known shape")
