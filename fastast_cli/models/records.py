"""The dict round trip every model config makes through a checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="ConfigRecord")

# Bounds of the numbers a model config may hold, whatever the model: far beyond any published
# audio transformer or CNN, small enough that a crafted file cannot make the model itself
# exhaust memory before its weights are compared with it.
COMMON_LIMITS: dict[str, tuple[float, float]] = {
    "num_classes": (1, 1_000_000), "embed_dim": (1, 16384), "depth": (1, 256),
    "num_heads": (1, 1024), "mlp_ratio": (1e-3, 64), "patch_size": (1, 256),
    "fstride": (1, 256), "tstride": (1, 256), "num_mel_bins": (1, 1024),
    "target_length": (1, 100_000), "layer_norm_eps": (1e-30, 1.0),
    "head_layer_norm_eps": (1e-30, 1.0), "max_tokens": (1, 10_000_000), "heads": (1, 1024),
    "patchout_time": (0, 100_000), "patchout_freq": (0, 1024),
}


class ConfigRecord:
    """Mixin for config dataclasses: `to_dict` for saving, `from_dict` for loading (keys this
    version does not know are ignored, so older fastast versions read newer files). Numbers
    are checked on loading: an int field holds an int (not a bool), a float a finite number,
    both within `LIMITS`."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = COMMON_LIMITS

    @classmethod
    def from_dict(cls: type[R], values: dict[str, Any]) -> R:
        """The config in `values`; raises ValueError naming a field whose value is unusable."""
        known = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
        chosen = {k: v for k, v in values.items() if k in known}
        for name, value in chosen.items():
            _check_field(name, value, str(known[name]), cls.LIMITS.get(name))
        return cls(**chosen)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


def _check_field(name: str, value: Any, kind: str, limits: tuple[float, float] | None) -> None:
    """Refuse a value of the wrong type, not finite, or outside `limits`."""
    if value is None and "None" in kind:
        return
    numeric = kind.split("|")[0].strip() in ("int", "float")
    if not numeric:
        if kind.startswith("bool") and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r:.40}")
        return
    integer = kind.startswith("int")
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            integer and not float(value).is_integer()) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a finite number'}, "
                         f"got {value!r:.40}")
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise ValueError(f"{name} must lie in [{limits[0]:g}, {limits[1]:g}], got {value:g}")
