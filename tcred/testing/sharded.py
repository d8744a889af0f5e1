"""Sharded-versus-one-device checks on simulated CPU devices, run in their own process.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tcred.testing.sharded CHECK [...] --out result.json

The device count is fixed when JAX starts, so the tests (`tests/parallel/test_mesh.py`)
run this module in a subprocess and the rest of the suite keeps one device. Each check
computes the same thing with unplaced inputs (one device) and placed on one or more
meshes (`tcred.parallel.mesh`), compares them, and records every comparison that fails;
the JSON result holds `compared` (how many comparisons ran), `failures` (one line each)
and `info` (figures for the report).

Checks:
  train-step  the RL train step (loss, every metric, updated parameters and optimizer
              state; f32, rtol = atol = 1e-5) for the credit methods in `--methods` on the
              meshes in `--meshes` (`DxF` = mesh.data × mesh.fsdp); the "mi-weight" method
              also compares its extras (`compute_extras`) computed on the mesh.
  sampler     `sample_groups` tokens (exactly) and log-probs for the same key.
  checkpoint  a state trained one step on a (4, 2) mesh and saved resumes on (8, 1) and on
              one device: restored leaves bit-equal, next-step metrics equal (1e-5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tcred.credit import make_credit
from tcred.credit.extras import compute_extras
from tcred.credit.tree import tree_extras
from tcred.losses.pg import LossConfig
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.parallel.mesh import Layout, MeshConfig, make_mesh
from tcred.sampling.rollout import sample_trees_and_score
from tcred.sampling.sampler import sample_groups
from tcred.tasks.registry import make_task
from tcred.training.checkpoint import Checkpointer
from tcred.training.config import TreeConfig
from tcred.training.optim import adamw
from tcred.training.packing import pack_trees
from tcred.training.step import Batch, TrainState, rl_train_step

B, G, P, T, J = 8, 4, 5, 6, 4  # prompts, group, prompt tokens, response tokens, answer tokens
TOL = dict(rtol=1e-5, atol=1e-5)
METHODS = ("outcome", "entropy-mask", "treerl", "mi-weight")
MESHES = ("8x1", "1x8", "4x2")


def simulated_env(devices: int) -> dict[str, str]:
  """The environment of a subprocess with `devices` simulated CPU devices that imports this checkout."""
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
  return env


class Recorder:
  """Counts comparisons and collects the failing ones (one line each)."""

  def __init__(self):
    self.compared, self.failures, self.info = 0, [], {}

  def close(self, what: str, a, b, **tol):
    self.compared += 1
    try:
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **(tol or TOL))
    except AssertionError as e:
      self.failures.append(f"{what}: " + " ".join(str(e).split())[:300])

  def equal(self, what: str, a, b):
    self.compared += 1
    if not np.array_equal(np.asarray(a), np.asarray(b)):
      self.failures.append(f"{what}: not equal ({int(np.sum(np.asarray(a) != np.asarray(b)))} elements differ)")

  def tree(self, what: str, a, b, **tol):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
      self.close(f"{what}{jax.tree_util.keystr(path)}", x, y, **tol)


def _layout(spec: str) -> Layout:
  data, fsdp = (int(v) for v in spec.split("x"))
  return Layout(make_mesh(MeshConfig(data=data, fsdp=fsdp)))


def _policy():
  """A 1-layer width-32 policy (the tiny preset with one layer: quick to compile)."""
  config = dataclasses.replace(model_preset("tiny"), num_hidden_layers=1)
  graphdef, params = nnx.split(Decoder(config, rngs=nnx.Rngs(0)))
  return graphdef, params


def _dense_batch(seed: int = 0) -> Batch:
  rng = np.random.default_rng(seed)
  mask = np.arange(T)[None, None, :] < rng.integers(2, T + 1, (B, G, 1))
  prompt = rng.integers(3, 99, (B, P)).astype(np.int32)
  prompt[:, 0] = 1
  return Batch(prompt=prompt, prompt_valid=np.ones((B, P), bool),
               response=np.where(mask, rng.integers(3, 99, (B, G, T)), 0).astype(np.int32), mask=mask,
               old_logp=np.where(mask, rng.normal(-4.0, 0.5, (B, G, T)), 0.0).astype(np.float32),
               rewards=rng.integers(0, 2, (B, G)).astype(np.float32), group_valid=np.ones((B,), bool), extras={})


def _tree_batch(graphdef, params) -> Batch:

  task = make_task("countdown")
  problems = [task.sample(np.random.default_rng(i)) for i in range(B)]
  tree = TreeConfig(enabled=True, trees=2, rounds=1, forks=1, branch=1, fork_at="neg-logp")
  groups = sample_trees_and_score(graphdef, params, task, problems, jax.random.key(3), np.random.default_rng(0),
                                  tree=tree, temperature=1.0)
  r = groups.rollouts
  rng = np.random.default_rng(1)
  old = np.where(r.mask, r.logp + rng.normal(0, 0.3, r.logp.shape), 0).astype(np.float32)
  return Batch(prompt=groups.prompt, prompt_valid=groups.prompt_valid, response=r.tokens, mask=r.mask,
               old_logp=old, rewards=rng.integers(0, 2, groups.rewards.shape).astype(np.float32),
               group_valid=np.ones((B,), bool), extras=tree_extras(groups.trees),
               packed=pack_trees(groups.prompt, groups.prompt_valid, r.tokens, groups.trees.arrays))


def _extras_inputs(batch: Batch):
  rng = np.random.default_rng(5)
  answer = rng.integers(3, 99, (B, J)).astype(np.int32)
  answer_valid = np.arange(J)[None, :] < rng.integers(2, J + 1, (B, 1))
  solution = rng.integers(3, 99, (B, 3)).astype(np.int32)
  return (batch.prompt, batch.prompt_valid, batch.response, batch.mask, np.where(answer_valid, answer, 0),
          answer_valid, solution, np.ones((B, 3), bool))


def _extras(graphdef, params, inputs, layout: Layout | None):

  if layout is not None:
    params, inputs = layout.place_state(params), layout.place_batch(inputs)
  out = compute_extras(graphdef, params, *inputs, names=("info_gain",), temperature=1.0, cue_id=7)
  return out


def _step(graphdef, params, batch: Batch, method: str, layout: Layout | None, tx):
  """One train step from `params` (copied); returns (state, metrics) as host arrays."""
  p = jax.tree.map(jnp.copy, params)
  state = TrainState(p, tx.init(p), jnp.int32(0))
  batch = jax.tree.map(jnp.asarray, batch)
  if layout is not None:
    state, batch = layout.place_state(state), layout.place_batch(batch)
  state, metrics = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx, credit=make_credit(method),
                                 loss_config=LossConfig(), temperature=1.0, chunk_size=64, layout=layout)
  return state, metrics


def check_train_step(rec: Recorder, methods, meshes):
  graphdef, params = _policy()
  tx = adamw(1e-2, warmup=0, weight_decay=0.01, max_grad_norm=1.0)
  dense = _dense_batch()
  for method in methods:
    batch = _tree_batch(graphdef, params) if method in ("treerl", "tree-grpo") else dense
    if method == "mi-weight":
      inputs = _extras_inputs(batch)
      extras = jax.device_get(_extras(graphdef, params, inputs, None))
      for spec in meshes:
        sharded = jax.device_get(_extras(graphdef, params, inputs, _layout(spec)))
        rec.info[f"{method} {spec} extras"] = sorted(sharded)
        rec.tree(f"{method} {spec} extras", sharded, extras)
      batch = batch._replace(extras=extras)
    state1, m1 = jax.device_get(_step(graphdef, params, batch, method, None, tx))
    assert m1["optim/skipped"] == 0 and m1["optim/grad_norm"] > 0, (method, m1)
    rec.info[f"{method} loss"] = float(m1["loss/total"])
    for spec in meshes:
      layout = _layout(spec)
      state, m = _step(graphdef, params, batch, method, layout, tx)
      kept = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
      rec.info[f"{method} {spec} param specs"] = sorted(kept)
      state, m = jax.device_get((state, m))
      rec.equal(f"{method} {spec} metric names", sorted(m), sorted(m1))
      for k in m1:
        rec.close(f"{method} {spec} {k}", m[k], m1[k])
      rec.tree(f"{method} {spec} params", state.params, state1.params)
      rec.tree(f"{method} {spec} opt_state", state.opt_state, state1.opt_state)


def check_sampler(rec: Recorder, meshes):

  graphdef, params = _policy()
  batch = _dense_batch()
  kw = dict(group_size=G, max_new_tokens=12, temperature=1.0, eos_id=2, pad_id=0)
  key = jax.random.key(11)
  one = jax.device_get(sample_groups(graphdef, params, batch.prompt, batch.prompt_valid, key, **kw))
  for spec in meshes:
    layout = _layout(spec)
    out = sample_groups(graphdef, layout.place_state(params), *layout.place_batch((batch.prompt, batch.prompt_valid)),
                        layout.place_replicated(key), layout=layout, **kw)
    rec.info[f"sampler {spec} tokens sharding"] = str(out.tokens.sharding.spec)
    out = jax.device_get(out)
    rec.equal(f"sampler {spec} tokens", out.tokens, one.tokens)
    rec.equal(f"sampler {spec} mask", out.mask, one.mask)
    rec.close(f"sampler {spec} logp", out.logp, one.logp)


def check_checkpoint(rec: Recorder):

  graphdef, params = _policy()
  tx = adamw(1e-2, warmup=0, weight_decay=0.01, max_grad_norm=1.0)
  credit, loss = make_credit("entropy-mask"), LossConfig()
  b1, b2 = (jax.tree.map(jnp.asarray, _dense_batch(s)) for s in (1, 2))
  step = lambda state, batch, layout: rl_train_step(
      state, layout.place_batch(batch) if layout else batch, None, graphdef=graphdef, tx=tx, credit=credit,
      loss_config=loss, temperature=1.0, chunk_size=64, layout=layout)
  fresh = lambda: (lambda p: TrainState(p, tx.init(p), jnp.int32(0)))(jax.tree.map(jnp.copy, params))
  saver = _layout("4x2")
  state, _ = step(saver.place_state(fresh()), b1, saver)
  saved = jax.device_get(state)
  with tempfile.TemporaryDirectory() as d:
    ckpt = Checkpointer(pathlib.Path(d) / "ckpt")
    assert ckpt.save(1, state, {"samples": 1})
    _, m_ref = jax.device_get(step(state, b2, saver))  # the uninterrupted run's next step
    for name, layout in (("8x1", _layout("8x1")), ("1x8", _layout("1x8")), ("one device", None)):
      template = fresh() if layout is None else layout.place_state(fresh())
      _, restored, meta = Checkpointer(pathlib.Path(d) / "ckpt").restore_latest(template)
      rec.equal(f"checkpoint -> {name} metadata", meta["samples"], 1)
      placed = {len(x.sharding.device_set) for x in jax.tree.leaves(restored)}
      rec.info[f"checkpoint -> {name} devices per leaf"] = sorted(placed)
      for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(jax.device_get(restored))[0],
                              jax.tree.leaves(saved)):
        rec.equal(f"checkpoint -> {name} leaf {jax.tree_util.keystr(path)}", a, b)
      _, m = jax.device_get(step(restored, b2, layout))
      for k in m_ref:
        rec.close(f"checkpoint -> {name} next-step {k}", m[k], m_ref[k])
    ckpt.close()


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("checks", nargs="+", choices=["train-step", "sampler", "checkpoint"])
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--meshes", default=",".join(MESHES))
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  jax.config.update("jax_default_matmul_precision", "highest")  # as the test suite (tests/conftest.py)
  rec = Recorder()
  rec.info["devices"] = jax.device_count()
  meshes = args.meshes.split(",")
  if "train-step" in args.checks:
    check_train_step(rec, args.methods.split(","), meshes)
  if "sampler" in args.checks:
    check_sampler(rec, meshes)
  if "checkpoint" in args.checks:
    check_checkpoint(rec)
  pathlib.Path(args.out).write_text(json.dumps({"compared": rec.compared, "failures": rec.failures,
                                                "info": rec.info}, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
