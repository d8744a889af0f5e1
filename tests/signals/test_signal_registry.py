"""The token-signal registry (`tcred.signals.registry`): every registered signal against its plain-NumPy
reference (`tcred.testing.numpy_refs.SIGNAL_REFS`), jitted and un-jitted (`chex.variants`) and vmapped over
prompts, with padding, all-equal rewards (no NaN) and a group of one rollout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tcred.sampling.tree import tree_arrays
from tcred.signals import registry
from tcred.testing import numpy_refs

BUILTIN = ("entropy", "surprisal", "rsi", "hsic-mi", "info-gain", "xroll-sigma", "xroll-sigma-delta", "tree-sibling-gap",
           "tree-fork-gap", "random", "entropy-bound", "delta-logp", "gmts-hidden", "gmts-unembed")
T = 6


def _forest(rng, g: int, trees: int):
  """A random forest of one prompt: M = `trees` chains, then forks of earlier rows inside their tokens."""
  source, fork_pos = np.full(g, -1, np.int32), np.zeros(g, np.int32)
  length, tree_id = np.zeros(g, np.int32), np.zeros(g, np.int32)
  for i in range(g):
    if i < trees:
      tree_id[i], length[i] = i, rng.integers(1, T + 1)
    else:
      s = int(rng.integers(0, i))
      source[i], tree_id[i] = s, tree_id[s]
      fork_pos[i] = rng.integers(fork_pos[s], length[s])
      length[i] = rng.integers(fork_pos[i] + 1, T + 1)
  return tree_arrays(source, fork_pos, length, tree_id, trees=trees, max_new_tokens=T), tree_id


def _group(rng, g: int, *, tree: bool, equal_rewards: bool = False) -> dict[str, np.ndarray]:
  """Every input a signal may read, for one group of `g` rollouts (padding included)."""
  a, tree_id = _forest(rng, g, trees=max(1, g // 2))
  if tree:
    mask = a.token_node >= 0
  else:  # chains: any length, an empty response included
    lengths = rng.integers(0, T + 1, size=g)
    lengths[0] = T
    mask = np.arange(T)[None, :] < lengths[:, None]
  rewards = np.full(g, 1.0, np.float32) if equal_rewards else rng.integers(0, 2, size=g).astype(np.float32)
  return {"mask": mask, "rewards": rewards, "entropy": rng.uniform(0, 3, (g, T)).astype(np.float32),
          "logp": -rng.uniform(0, 5, (g, T)).astype(np.float32), "mi": rng.uniform(0, 1, (g, T)).astype(np.float32),
          "info_gain": rng.normal(size=(g, T)).astype(np.float32), "tree_id": tree_id,
          "key": rng.integers(0, 2**32, size=2, dtype=np.uint32),
          "ref_policy_logp": -rng.uniform(0, 5, (g, T)).astype(np.float32),
          "grad_norm_hidden": rng.uniform(0, 4, (g, T)).astype(np.float32),
          "grad_norm_unembed": rng.uniform(0, 9, (g, T)).astype(np.float32),
          "tree_parent": a.parent, "tree_is_leaf": a.is_leaf, "tree_valid": a.valid, "tree_leaf_row": a.leaf_row,
          "token_node": a.token_node}


def _reference(name: str, arrays) -> np.ndarray:
  signal = registry.get_signal(name)
  want = numpy_refs.SIGNAL_REFS[name](*[arrays[n] for n in signal.inputs])
  return np.where(arrays["mask"], want, 0.0)


def test_every_builtin_signal_is_registered_with_a_reference():
  assert registry.signal_names()[:len(BUILTIN)] == list(BUILTIN)
  assert set(BUILTIN) <= set(numpy_refs.SIGNAL_REFS)
  for name in BUILTIN:
    s = registry.get_signal(name)
    assert s.description and "arXiv" in (s.fn.__doc__ or ""), name  # the formula's paper, in the docstring
  assert [registry.get_signal(n).needs_extras for n in ("entropy", "surprisal", "hsic-mi", "xroll-sigma")] == [
      (), (), ("mi",), ("info_gain",)]
  assert registry.get_signal("tree-fork-gap").needs_tree and not registry.get_signal("surprisal").needs_tree


class SignalReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*[(n,) for n in BUILTIN])
  def test_one_group_matches_numpy_reference(self, name):
    signal = registry.get_signal(name)
    arrays = _group(np.random.default_rng(sum(map(ord, name))), 4, tree=signal.needs_tree)
    got = np.asarray(self.variant(signal.fn)(*[jnp.asarray(arrays[n]) for n in signal.inputs]))
    assert got.shape == (4, T)
    np.testing.assert_allclose(np.where(arrays["mask"], got, 0.0), _reference(name, arrays), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BUILTIN)
def test_vmapped_over_prompts_with_padding(name):
  """`TokenSignal.__call__` (vmap over B prompts, under jit as the callers use it) equals the per-group references
  and is exactly 0 on padding."""
  signal = registry.get_signal(name)
  rng = np.random.default_rng(7)
  groups = [_group(rng, 4, tree=signal.needs_tree) for _ in range(3)]
  batch = {k: np.stack([grp[k] for grp in groups]) for k in groups[0]}
  got = np.asarray(jax.jit(signal.__call__)(batch))
  assert got.shape == (3, 4, T) and got.dtype == np.float32
  np.testing.assert_array_equal(got[~batch["mask"]], 0.0)
  np.testing.assert_allclose(got, np.stack([_reference(name, grp) for grp in groups]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BUILTIN)
def test_all_equal_rewards_and_group_of_one_are_finite(name):
  signal = registry.get_signal(name)
  rng = np.random.default_rng(3)
  for g in (1, 4):
    arrays = _group(rng, g, tree=signal.needs_tree, equal_rewards=True)
    got = np.asarray(jax.jit(signal.__call__)({k: v[None] for k, v in arrays.items()}))[0]
    assert np.isfinite(got).all(), (name, g)
    np.testing.assert_allclose(got, _reference(name, arrays), rtol=1e-5, atol=1e-5)
    if signal.needs_tree:  # every subtree has the value of its parent and root: no gap anywhere
      np.testing.assert_array_equal(got, 0.0)
    if g == 1 and name.startswith("xroll-sigma"):  # one rollout has no cross-rollout spread
      np.testing.assert_array_equal(got, 0.0)


def test_registration_is_checked_in_one_place():
  fn = lambda logp, mask: -logp
  with pytest.raises(ValueError, match="already registered"):
    registry.register_signal(registry.TokenSignal(name="surprisal", description="dup", fn=fn, inputs=("logp", "mask")))
  with pytest.raises(ValueError, match=r"takes? its 1 inputs|does not take its 1 inputs"):
    registry.TokenSignal(name="x", description="x", fn=fn, inputs=("logp",))
  with pytest.raises(ValueError, match="non-empty tuple"):
    registry.TokenSignal(name="x", description="x", fn=fn, inputs=["logp", "mask"])
  with pytest.raises(ValueError, match=r"unknown token signal 'nope'; allowed: \['entropy', 'surprisal'"):
    registry.get_signal("nope")
  with pytest.raises(ValueError, match=r"needs \['logp'\]"):
    registry.get_signal("surprisal")({"mask": np.ones((1, 2, 3), bool)})


def test_normalised_magnitude_matches_numpy_reference():
  rng = np.random.default_rng(0)
  score = rng.normal(size=(3, T)).astype(np.float32)
  score[2] = 0.0  # no signal: plain outcome weights (all ones)
  mask = np.arange(T)[None, :] < np.array([[T], [2], [4]])
  got = np.asarray(jax.jit(registry.normalised_magnitude)(score, mask))
  np.testing.assert_allclose(got, numpy_refs.normalised_magnitude(score, mask), rtol=1e-6)
  np.testing.assert_allclose(got[2, :4], 1.0)
  # by hand: |s| = (3, 1) over two valid tokens has mean 2, so the weights are (1.5, 0.5)
  np.testing.assert_allclose(registry.normalised_magnitude(jnp.array([[-3.0, 1.0, 9.0]]), jnp.array([[1, 1, 0]], bool)),
                             [[1.5, 0.5, 0.0]])
