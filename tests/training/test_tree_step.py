"""Training on trees: the packed train-once update equals training every leaf sequence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tcred.credit import make_credit
from tcred.credit.tree import tree_extras
from tcred.losses.pg import LossConfig
from tcred.tasks.registry import make_task
from tcred.training.config import TreeConfig
from tcred.training.packing import pack_trees
from tcred.sampling.rollout import sample_trees_and_score
from tcred.training.step import Batch, TrainState, rl_train_step


@pytest.mark.parametrize("credit,kl", [pytest.param("tree-grpo", 0.0, marks=pytest.mark.slow), ("treerl", 0.0),
                                       pytest.param("outcome", 0.1, marks=pytest.mark.slow)])
def test_train_once_update_equals_per_leaf_update(tiny_model, credit, kl):
  graphdef, params = nnx.split(tiny_model)
  task = make_task("countdown")
  problems = [task.sample(np.random.default_rng(i)) for i in range(2)]
  tree = TreeConfig(enabled=True, trees=2, rounds=1, forks=2, branch=1, fork_at="neg-logp")
  groups = sample_trees_and_score(graphdef, params, task, problems, jax.random.key(3), np.random.default_rng(0),
                                  tree=tree, temperature=1.0)
  r = groups.rollouts
  rewards = np.random.default_rng(1).integers(0, 2, groups.rewards.shape).astype(np.float32)
  # Old log-probs a little off the current policy so that PPO ratios differ from 1 and some clip.
  old = np.where(r.mask, r.logp + np.random.default_rng(2).normal(0, 0.3, r.logp.shape), 0).astype(np.float32)
  extras = {k: jnp.asarray(v) for k, v in tree_extras(groups.trees).items()}
  dense = Batch(prompt=jnp.asarray(groups.prompt), prompt_valid=jnp.asarray(groups.prompt_valid),
                response=jnp.asarray(r.tokens), mask=jnp.asarray(r.mask), old_logp=jnp.asarray(old),
                rewards=jnp.asarray(rewards), group_valid=jnp.ones((2,), bool), extras=extras)
  packed = dense._replace(packed=jax.tree.map(jnp.asarray, pack_trees(groups.prompt, groups.prompt_valid,
                                                                     r.tokens, groups.trees.arrays)))
  tx = optax.sgd(1.0)  # the update is the gradient itself
  loss = LossConfig(clip_low=0.1, clip_high=0.1, kl_coef=kl)
  out = {}
  for name, batch in [("dense", dense), ("packed", packed)]:
    p = jax.tree.map(jnp.copy, params)
    state = TrainState(p, tx.init(p), jnp.int32(0))
    state, m = rl_train_step(state, batch, params if kl else None, graphdef=graphdef, tx=tx,
                             credit=make_credit(credit), loss_config=loss, temperature=1.0)
    out[name] = (jax.tree.map(lambda a, b: a - b, state.params, params), m)
  grads_dense, m_dense = out["dense"]
  grads_packed, m_packed = out["packed"]
  assert float(m_dense["optim/grad_norm"]) > 1e-4  # a real update
  assert float(m_dense["policy/clip_frac"]) > 0
  for a, b in zip(jax.tree.leaves(grads_dense), jax.tree.leaves(grads_packed)):
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=2e-4)
  for k in ("loss/total", "policy/entropy", "policy/clip_frac", "credit/abs_advantage"):
    np.testing.assert_allclose(m_dense[k], m_packed[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["countdown-tree-grpo", pytest.param("graph-path-treerl", marks=pytest.mark.slow)])
def test_tree_experiments_run_by_name(tmp_path, name):
  import json

  from tcred import cli
  from test_cli import TINY
  tree = ["--set", "tree.trees=1", "--set", "tree.forks=1"]  # 2 leaves per prompt, like TINY's group_size
  assert cli.main(["run", name, "--steps", "2", "--out", str(tmp_path), "--no-progress", *TINY, *tree]) == 0
  run = tmp_path / name / "seed-0"
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and all(r["optim/skipped"] == 0.0 for r in rows)
  summary = json.loads((run / "summary.json").read_text())
  # Generated tokens count each shared prefix once: fewer than the leaf-view tokens.
  leaf_tokens = sum(r["train/response_len"] * 4 * 2 for r in rows)
  assert 0 < summary["tokens_generated"] < leaf_tokens
  # The recorded step holds the tree sibling gap (the registered signal on the run's forest): |TreeRL's credit|.
  from tcred.training.record import load_record, record_path
  rec = load_record(record_path(run, 2))
  gap = rec.signals["tree-sibling-gap"]
  assert np.all(gap >= 0) and not gap[~rec.mask].any()
  if name.endswith("treerl"):
    trained = rec.mask & rec.group_valid[:, None, None]
    np.testing.assert_allclose(gap[trained], np.abs(rec.credit[trained]), atol=1e-5)
