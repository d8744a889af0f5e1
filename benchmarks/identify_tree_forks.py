"""Where do the decisive tokens of tree leaves sit relative to the forks? (the tree section of `tcred identify`)

Reruns the tree half of the identifiability study (same settings and seeds as `tcred identify TASK`, so the
same tree leaves and the same Monte-Carlo A_t; no bootstrap) and prints, per task:

- fork tokens: the first token of each segment whose parent is a segment (where sibling subtrees diverge:
  the fork re-sampled it, or the source row's own token there), counted once per leaf through them;
- the decisive rate (|A_t| ≥ δ) at fork tokens and elsewhere, and the share of decisive tokens at a fork;
- at fork tokens only: Spearman with |A_t| of |V(s) − V(parent s)| (`tree-fork-gap`), of |A(s)|
  (`tree-sibling-gap`) and of −log p, and the AUROC of `tree-fork-gap`.

    python benchmarks/identify_tree_forks.py countdown graph-path
"""

from __future__ import annotations

import sys

import numpy as np

from tcred.evaluation import identify as idf
from tcred.evaluation import identify_metrics as im
from tcred.tasks.registry import make_task_from_config
from tcred.training.data import eval_problems


def main(tasks: list[str]) -> None:
  for name in tasks:
    cfg = idf.IdentifyConfig(bootstrap=0, rollouts_from="tree")
    ecfg, graphdef, params, _ = idf.load_policy(name, "base", prompts=cfg.prompts)
    task = make_task_from_config(ecfg.task, ecfg.task_config)
    data = idf.run_study(graphdef, params, task, eval_problems(task, cfg.prompts), cfg, source="tree",
                         signals=["surprisal", "tree-sibling-gap", "tree-fork-gap"])
    m = data.rollout.mask
    adv = np.abs(data.truth.advantages)[m]
    dec = adv >= cfg.delta
    token_node = np.stack([a.token_node for a in data.trees.arrays])  # [N, G, T]
    prev = np.concatenate([np.full_like(token_node[..., :1], -1), token_node[..., :-1]], -1)
    first = (token_node >= 0) & (token_node != prev)
    at_fork = np.zeros_like(first)
    for i, a in enumerate(data.trees.arrays):  # nodes < M are the tree roots (the prompt)
      at_fork[i] = first[i] & (a.parent[np.clip(token_node[i], 0, None)] >= cfg.tree.trees)
    at_fork = at_fork[m]
    sig = {k: v[m] for k, v in data.signals.items()}
    print(f"{name}: {m.sum()} leaf tokens, {dec.sum()} decisive; fork tokens {at_fork.sum()} "
          f"({100 * at_fork.mean():.1f}%): decisive rate {dec[at_fork].mean():.3f} there vs {dec[~at_fork].mean():.3f} "
          f"elsewhere; {dec[at_fork].sum() / max(dec.sum(), 1):.3f} of the decisive tokens are fork tokens, "
          f"{(dec & (sig['tree-sibling-gap'] > 0)).sum() / max(dec.sum(), 1):.3f} lie in a segment with a non-zero "
          "sibling gap")
    f = at_fork
    print(f"  at fork tokens, Spearman with |A_t|: tree-fork-gap {im.spearman(sig['tree-fork-gap'][f], adv[f]):.3f}, "
          f"tree-sibling-gap {im.spearman(sig['tree-sibling-gap'][f], adv[f]):.3f}, "
          f"surprisal {im.spearman(sig['surprisal'][f], adv[f]):.3f}; AUROC of tree-fork-gap "
          f"{im.auroc(sig['tree-fork-gap'][f], dec[f]):.3f}; mean |A_t| {adv[f].mean():.3f} vs "
          f"{adv[~f].mean():.3f} elsewhere")


if __name__ == "__main__":
  main(sys.argv[1:] or ["countdown", "graph-path"])
