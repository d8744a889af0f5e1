"""Trees (DESIGN §4.5): 2 chains per prompt, one round of 3 forks per tree, 8 leaves per prompt like
the chains of `<task>-grpo`.

Shared prefixes are generated once, so a tree step generates fewer tokens; `prompts_per_step` is
raised so that a step generates about as many tokens as GRPO's 16 × 8 chains, i.e. the comparison is
at equal generated tokens: round(16 / (tree tokens / chain tokens per prompt)), the ratios measured on
the SFT base policies by `python benchmarks/trees.py [--tasks ...]`: countdown 0.60 step / 0.78 entropy,
graph-path 0.65 / 0.70, long-addition 0.63 / 0.66 on the bases these budgets were set on. Remeasured in session 13
on the held-out-by-problem bases (benchmarks/results/trees.md): 0.59 / 0.73, 0.65 / 0.70, 0.63 / 0.66; only
countdown's entropy budget would move (21 -> 22 prompts), and suite-trees' countdown-treerl runs generated
104k tokens against GRPO's 103k, so the budgets stay. A task without a measured budget is an error, not a default.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import REAL_MODEL_TASKS, register_method
from tcred.training.config import ExperimentConfig, TreeConfig

PROMPTS_PER_STEP = {("countdown", "step"): 27, ("countdown", "entropy"): 21,
                    ("graph-path", "step"): 25, ("graph-path", "entropy"): 23,
                    ("long-addition", "step"): 26, ("long-addition", "entropy"): 24,
                    # Real-model tasks: no fixed policy to measure on; 8 prompts a step, as their chains.
                    **{(task, fork_at): 8 for task in REAL_MODEL_TASKS for fork_at in ("step", "entropy")}}


def _tree(credit: str, fork_at: str):
  def edit(c: ExperimentConfig) -> ExperimentConfig:
    if (c.task, fork_at) not in PROMPTS_PER_STEP:
      raise ValueError(f"no measured tree prompt budget for task {c.task!r} with fork_at={fork_at!r}; "
                       f"measured: {sorted(PROMPTS_PER_STEP)} (run benchmarks/trees.py --tasks {c.task})")
    return dataclasses.replace(
        c, credit=make_credit(credit), tree=TreeConfig(enabled=True, trees=2, rounds=1, forks=3, branch=1,
                                                       fork_at=fork_at),
        rl=dataclasses.replace(c.rl, prompts_per_step=PROMPTS_PER_STEP[(c.task, fork_at)]))
  return edit


register_method("tree-grpo", "Tree-GRPO: forks at step boundaries, intra + inter-tree leaf advantages",
                _tree("tree-grpo", "step"))
register_method("treerl", "TreeRL / EPTree: forks at the highest-entropy tokens, segment advantages",
                _tree("treerl", "entropy"))
