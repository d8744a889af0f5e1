"""Credit methods (a registry) and group advantages."""

from tcred.credit.advantages import ADVANTAGE_MODES, AdvantageMode, group_advantages
from tcred.credit.base import (Credit, CreditInputs, CreditMethod, credit_class, credit_names,
                               make_credit, register_credit)
from tcred.credit import outcome  # noqa: F401  (registers "outcome")
from tcred.credit import signal_methods  # noqa: F401,E402  (registers the token-signal masks and weights)
from tcred.credit import token_signals  # noqa: F401,E402  (registers DRO's methods)
from tcred.credit import tree  # noqa: F401,E402  (registers "tree-grpo", "treerl")
from tcred.credit import judge  # noqa: F401,E402  (registers "judge")
from tcred.credit import controls  # noqa: F401,E402  (registers "policy-value", "verifier", "random-mask", "shuffled")
