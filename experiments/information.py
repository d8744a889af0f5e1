"""Information: tokens that carry information about the answer (DESIGN §4.3).

Each changes only the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import register_method

register_method("mi-peaks", "policy gradient on HSIC mutual-information peak tokens",
                lambda c: dataclasses.replace(c, credit=make_credit("mi-peaks")))
register_method("mi-weight", "advantage scaled by normalised answer information gain",
                lambda c: dataclasses.replace(c, credit=make_credit("mi-weight")))
