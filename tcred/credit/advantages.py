"""Group-relative outcome advantages (DESIGN §4.1): the normaliser's conventions as credit-method fields.

The normaliser itself, `group_advantages`, lives in `tcred.signals.group` (signals use it too and
never import credit); it is re-exported here.
"""

from __future__ import annotations

import dataclasses

from tcred.signals.group import (ADVANTAGE_MODES, LONE_RULES, STD_DDOF, AdvantageMode, check_group_norm,
                                 group_advantages)

__all__ = ["ADVANTAGE_MODES", "LONE_RULES", "STD_DDOF", "AdvantageMode", "GroupNorm", "check_group_norm", "group_advantages"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupNorm:
  """Mixin for credit methods that group-normalise rewards: the normaliser's conventions as fields.

  Attributes:
    std_ddof: 0 (population std, default) or 1 (Bessel's correction, as Tree-GRPO, the 80/20 code, TRL).
    eps: added to the std (default 1e-6; TRL uses 1e-4).
    lone: a group with one valid rollout gives it "zero" (default) or its raw "reward" (Tree-GRPO's code).
  """

  std_ddof: int = 0
  eps: float = 1e-6
  lone: str = "zero"

  def __post_init__(self):
    check_group_norm(std_ddof=self.std_ddof, eps=self.eps, lone=self.lone)

  def group_norm(self) -> dict:
    """Keyword arguments of `group_advantages` for these conventions."""
    return {"eps": self.eps, "ddof": self.std_ddof, "lone": self.lone}
