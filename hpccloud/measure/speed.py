"""The compute model: rank r runs kernel k at ``v_rk`` work units per second.

Rates come from timed kernel runs on real data (the speed probe, then every
step window of the runner, :mod:`hpccloud.runner.window`); a shard's work units belong to the shard, so the same
shard predicts different times on ranks of different speed. A model built from
given numbers (simulator, tests) has provenance ``"synthetic"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpccloud.errors import ConfigError


class SpeedModel:
    """Per-rank, per-kernel throughput in work units per second.

    Attributes
    ----------
    units_per_s : (P,) rates of the reference kernel (the one the speed probe ran).
    per_kernel : kernel name -> (P,) rates; NaN where a rank has no sample yet.
    """

    def __init__(self, size: int, reference_kernel: str = "stencil2d", provenance: str = "measured"):
        self.size = int(size)
        self.reference_kernel = reference_kernel
        self.provenance = provenance
        self.per_kernel: dict[str, np.ndarray] = {}

    @property
    def units_per_s(self) -> np.ndarray:
        return self.per_kernel.get(self.reference_kernel, np.full(self.size, np.nan))

    def rate(self, kernel: str | None = None) -> np.ndarray:
        """(P,) rates for ``kernel``; ranks without a sample fall back to the reference kernel
        scaled by the median ratio of the ranks that have both (so relative speeds survive)."""
        if kernel is None or kernel == self.reference_kernel:
            return self.units_per_s.copy()
        mine = self.per_kernel.get(kernel)
        ref = self.units_per_s
        if mine is None:
            return ref.copy()
        out = mine.copy()
        missing = ~np.isfinite(out)
        if missing.any():
            both = np.isfinite(mine) & np.isfinite(ref)
            scale = np.median(mine[both] / ref[both]) if both.any() else 1.0
            out[missing] = ref[missing] * scale
        return out

    def set_rates(self, kernel: str, units_per_s) -> None:
        """Replace all ranks' rates for ``kernel`` (e.g. after an allgather of measurements)."""
        arr = np.asarray(units_per_s, dtype=np.float64)
        if arr.shape != (self.size,):
            raise ValueError(f"expected {self.size} rates, got shape {arr.shape}")
        self.per_kernel[kernel] = arr.copy()

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "provenance": self.provenance,
            "reference_kernel": self.reference_kernel,
            "units_per_s": {k: [None if not np.isfinite(x) else float(x) for x in v]
                            for k, v in self.per_kernel.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str = "<speed model>") -> SpeedModel:
        try:
            rates = doc["units_per_s"]
            model = cls(int(doc["size"]), doc.get("reference_kernel", "stencil2d"),
                        doc.get("provenance", "measured"))
            for k, v in rates.items():
                model.set_rates(k, [np.nan if x is None else float(x) for x in v])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: not a speed model ({exc!r}). Fix: use the JSON written "
                              "by hpccloud") from None
        return model

    @classmethod
    def synthetic(cls, units_per_s, kernel: str = "stencil2d") -> SpeedModel:
        arr = np.asarray(units_per_s, dtype=np.float64)
        model = cls(arr.shape[0], kernel, provenance="synthetic")
        model.set_rates(kernel, arr)
        return model
