"""Checks shared by every config dataclass (DESIGN §2: bad values exit 2 naming the field)."""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import typing
from typing import Any


HASH_NEUTRAL_DEFAULT = {"hash_neutral_default": True}
"""Metadata of a config field added after results keyed by a config hash existed (SFT base policies,
`tcred.training.config.config_hash`; run config hashes, `run_config_hash`), whose default keeps the old
behaviour: at its default the field is left out of both hashes, so those caches and the hashes printed in
committed tables stay valid; set to anything else, it is hashed like any field."""


def require_finite(config: Any, prefix: str) -> None:
  """Raises ValueError naming `prefix.field` (`field` for an empty prefix) for the first real-valued
  field of the dataclass `config` that is NaN or ±inf (ints and bools are always finite; None and
  strings are skipped)."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
      name = f"{prefix}.{field.name}" if prefix else field.name
      raise ValueError(f"{name} must be a finite number, got {value!r}")


MAX_SEED = 2**63 - 1
"""The largest seed: `jax.random.key` takes a signed 64-bit integer (2**63 raises OverflowError;
NumPy's generators take any size). Every seed, of a flag or a config field, is in [0, MAX_SEED]."""


def require_seed(value: Any, name: str) -> None:
  """Raises ValueError naming `name` unless `value` is an integer in [0, MAX_SEED] (bools refused)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
    raise ValueError(f"{name} must be an integer in [0, 2**63 - 1 = {MAX_SEED}], got {value!r}")


class Choice(str, enum.Enum):
  """A closed set of named options (loss aggregation, advantage mode, tree fork rule, ...), checked in
  one place: `parse` is the only check, and its message is the only one for the kind.

  Members are strings (`Aggregation.TOKEN_MEAN == "token-mean"`), so configs keep plain strings
  (JSON, `--set`) and parse them where they are validated or dispatched on.
  """

  @classmethod
  def parse(cls, value: Any, *, field: str):
    """The member whose value is `value`; ValueError "unknown FIELD 'x'; allowed: a, b" otherwise."""
    for member in cls:
      if member.value == value:
        return member
    raise ValueError(f"unknown {field} {value!r}; allowed: {', '.join(m.value for m in cls)}")

  @classmethod
  def values(cls) -> tuple[str, ...]:
    return tuple(m.value for m in cls)


def parse_settings(cls: type, text: str, *, kind: str, name: str, sep: str = ",") -> dict[str, Any]:
  """The settings of the dataclass `cls` written as ``"key=value<sep>key=value"``, each value converted to
  its field's type (int, float, bool, str); ValueError naming the `kind` and `name` of what is set (e.g.
  judge 'mc'), the unknown key or the bad value, and what is allowed. A value may hold "=" (only the
  first one splits) and, with another separator than ",", commas (e.g. a judge's own settings inside
  the settings of a credit method).

  Used for the nested settings of a judge (`tcred.judges.base.parse_judge_settings`) and of the credit
  method that `shuffled` wraps.
  """
  what = f"{kind} {name!r}"
  hints = typing.get_type_hints(cls)
  allowed = sorted(f.name for f in dataclasses.fields(cls))
  out: dict[str, Any] = {}
  for item in filter(None, (part.strip() for part in text.split(sep))):
    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq:
      sep_name = "commas" if sep == "," else f"{sep!r}"
      raise ValueError(f"{kind} settings are key=value pairs separated by {sep_name}, got {item!r}")
    if key not in allowed:
      raise ValueError(f"{what} has no setting {key!r}; allowed: {allowed}")
    typ, raw = hints[key], raw.strip()
    try:
      if typ is bool:
        if raw.lower() not in ("true", "false"):
          raise ValueError
        out[key] = raw.lower() == "true"
      else:
        out[key] = typ(raw) if typ in (int, float, str) else raw
    except ValueError:
      raise ValueError(f"{what} setting {key}={raw!r}: expected a value of type "
                       f"{getattr(typ, '__name__', typ)}") from None
  return out
