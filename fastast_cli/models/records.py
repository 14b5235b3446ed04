"""The dict round trip every model config makes through a checkpoint."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

R = TypeVar("R", bound="ConfigRecord")


class ConfigRecord:
    """Mixin for config dataclasses: `to_dict` for saving, `from_dict` for loading (keys this
    version does not know are ignored, so older fastast versions read newer files)."""

    @classmethod
    def from_dict(cls: type[R], values: dict[str, Any]) -> R:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]
