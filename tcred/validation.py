"""Checks shared by every config dataclass (DESIGN §2: bad values exit 2 naming the field)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any


def require_finite(config: Any, prefix: str) -> None:
  """Raises ValueError naming `prefix.field` for the first real-valued field of the dataclass
  `config` that is NaN or ±inf (ints and bools are always finite; None and strings are skipped)."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
      raise ValueError(f"{prefix}.{field.name} must be a finite number, got {value!r}")
