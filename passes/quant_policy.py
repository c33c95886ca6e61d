"""Quantization policy: which layers are quantized, at which bit widths, with which observer.

Plain frozen data, validated on construction (errors name the bad value); the mechanism (calibration,
QDQ insertion, integer lowering) reads only this. Overrides select layers by exact name or glob pattern
(``conv2d_*``); the most specific wins (exact name over pattern, later pattern over earlier), and an override
that matches no layer of the model is an error, never a silent no-op.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Mapping

from .observers import OBSERVERS

BIT_WIDTHS = (4, 8)
GROUP_SIZES = (32, 64, 128)
"""Reduction elements per weight group (``LayerSpec.weight_group``): FPTQ's and DGQ's sizes."""
SCHEMES = {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4)}


class PolicyError(ValueError):
    """A policy value is invalid, or an override names no layer of the model."""


@dataclass(frozen=True)
class LayerSpec:
    """How one layer is quantized: weight bits (per-channel symmetric, or with ``weight_group`` a scale per
    group of that many reduction elements: 4-bit matmul weights only), activation bits and observer."""

    weight_bits: int = 8
    activation_bits: int = 8
    observer: str = "minmax"
    symmetric_activations: bool = False  # False: uint8-style asymmetric activations with a zero point
    quantize: bool = True  # False keeps the layer in float
    weight_group: int | None = None  # of GROUP_SIZES: group-wise 4-bit weights (matmuls; others per channel)

    def __post_init__(self) -> None:
        for kind, bits in (("weight", self.weight_bits), ("activation", self.activation_bits)):
            if bits not in BIT_WIDTHS:
                raise PolicyError(f"{kind} bit width {bits!r} is not supported; choose one of {BIT_WIDTHS}")
        if self.weight_group is not None and (self.weight_group not in GROUP_SIZES or self.weight_bits != 4):
            raise PolicyError(f"weight group {self.weight_group!r} needs 4-bit weights and a size of "
                              f"{', '.join(map(str, GROUP_SIZES))}")
        if self.observer not in OBSERVERS:
            raise PolicyError(f"unknown observer {self.observer!r}; choose one of {', '.join(OBSERVERS)}")


FLOAT_OPS = {"softmax": "relax.nn.softmax", "layer_norm": "relax.nn.layer_norm"}
"""Ops with an integer form that a policy may keep in float (``QuantPolicy.float_ops``): the float-island path,
for comparison or where its error matters more than its speed."""
FLOAT_OPS_ATTRIBUTE = "qc.float_ops"
"""The QDQ module's main attribute that carries ``QuantPolicy.float_ops`` (Relax op names) to ``lower_integer``."""


@dataclass(frozen=True)
class QuantPolicy:
    """The default ``LayerSpec`` plus overrides keyed by layer name or glob pattern."""

    default: LayerSpec = field(default_factory=LayerSpec)
    overrides: Mapping[str, LayerSpec] = field(default_factory=dict)
    smoothing: float | str | None = None  # SmoothQuant's alpha in (0, 1), "auto" (chosen on calibration), None
    float_ops: tuple[str, ...] = ()  # of FLOAT_OPS: kept as float islands although they have an integer form

    def __post_init__(self) -> None:
        unknown = [op for op in self.float_ops if op not in FLOAT_OPS]
        if unknown or isinstance(self.float_ops, str):
            raise PolicyError(f"float_ops must be a tuple of {', '.join(FLOAT_OPS)}; {unknown or self.float_ops!r} "
                              "is not")
        if self.smoothing is not None and self.smoothing != "auto" and not (
                isinstance(self.smoothing, (int, float)) and 0 < self.smoothing < 1):
            raise PolicyError(f"smoothing must be a migration strength in (0, 1), 'auto' or None, "
                              f"not {self.smoothing!r}")

    @classmethod
    def from_scheme(cls, scheme: str = "w8a8", observer: str = "minmax",
                    overrides: Mapping[str, LayerSpec] | None = None, weight_group: int | None = None
                    ) -> "QuantPolicy":
        """A policy from a scheme name (``w8a8``, ``w4a8``, ``w4a4``), an observer name and, for 4-bit
        weights, an optional group size."""
        if scheme not in SCHEMES:
            raise PolicyError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
        weight_bits, activation_bits = SCHEMES[scheme]
        if weight_group is not None and weight_bits != 4:
            raise PolicyError(f"a weight group size needs 4-bit weights; scheme {scheme!r} has {weight_bits}")
        return cls(LayerSpec(weight_bits, activation_bits, observer, weight_group=weight_group),
                   dict(overrides or {}))

    def resolve(self, layers: list[str]) -> dict[str, LayerSpec]:
        """The spec of every layer in ``layers``; raises if an override matches none of them."""
        unmatched = [key for key in self.overrides if not any(_matches(key, name) for name in layers)]
        if unmatched:
            raise PolicyError(f"override(s) {unmatched} match no layer; layers are: {', '.join(layers)}")
        return {name: self._spec_for(name) for name in layers}

    def _spec_for(self, name: str) -> LayerSpec:
        if name in self.overrides:
            return self.overrides[name]
        chosen = self.default
        for key, spec in self.overrides.items():
            if _matches(key, name):
                chosen = spec
        return chosen

    def with_override(self, key: str, **changes) -> "QuantPolicy":
        """A copy with ``key`` overridden: ``changes`` applied to the spec that currently covers it."""
        base = self.overrides.get(key, self.default)
        return replace(self, overrides={**self.overrides, key: replace(base, **changes)})


def _matches(key: str, name: str) -> bool:
    return key == name or fnmatch.fnmatchcase(name, key)
