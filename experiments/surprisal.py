"""Surprisal: tokens the policy found unlikely, −log p of the sampled token (DESIGN §4.2; issue 12), and RSI-S:
tokens whose surprisal relative to the entropy lies in a band (arXiv 2606.31575; issue 23).

Its identifiability figures (AUROC 0.86 on countdown before the controls) largely restate the bound
|A_t| ≤ 1 − p that on-policy values obey (issue 23): see the controlled identify reports. Each changes only
the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import REAL_MODEL_TASKS, SIGNAL_CREDIT_TASKS, TASKS, register_method

register_method("surprisal-top20", "policy gradient on the top-20% surprisal (−log p) tokens",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-top20")),
                tasks=TASKS + REAL_MODEL_TASKS + SIGNAL_CREDIT_TASKS)
register_method("surprisal-weight", "advantage scaled by normalised surprisal (−log p)",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-weight")))
register_method("rsi-s", "policy gradient on the tokens whose relative surprisal −log p / H lies in [0.1, 3] "
                "(RSI-S, arXiv 2606.31575)",
                lambda c: dataclasses.replace(c, credit=make_credit("rsi-s")),
                tasks=TASKS + REAL_MODEL_TASKS + SIGNAL_CREDIT_TASKS)
