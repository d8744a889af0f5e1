"""Surprisal: tokens the policy found unlikely, −log p of the sampled token (DESIGN §4.2; issue 12).

The identifiability study's best identifier of decisive tokens (AUROC 0.86 on countdown). Each changes only
the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import register_method

register_method("surprisal-top20", "policy gradient on the top-20% surprisal (−log p) tokens",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-top20")))
register_method("surprisal-weight", "advantage scaled by normalised surprisal (−log p)",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-weight")))
