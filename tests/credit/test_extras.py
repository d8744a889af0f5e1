import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.credit.extras import compute_extras, cue_index


def test_mi_from_plain_forward_equals_mi_from_packed_scoring(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  prompt = jnp.array([[0, 1, 10, 11], [1, 12, 13, 14]], jnp.int32)
  response = jnp.array([[[20, 21, 5, 30, 2], [22, 23, 24, 2, 0]], [[25, 5, 31, 2, 0], [26, 27, 28, 29, 33]]],
                       jnp.int32)
  mask = jnp.concatenate([jnp.ones((2, 2, 1), bool), (response[..., 1:] != 0)], axis=-1)
  answer = jnp.array([[5, 30, 2, 0], [5, 31, 2, 0]], jnp.int32)
  solution = jnp.array([[0, 1, 40, 41], [1, 42, 43, 44]], jnp.int32)
  args = (graphdef, params, prompt, prompt != 0, response, mask, answer, answer != 0, solution, solution != 0)
  kw = dict(temperature=1.0, cue_id=5)
  alone = compute_extras(*args, names=("mi",), **kw)
  packed = compute_extras(*args, names=("info_gain", "mi", "ref_logp", "ref_std"), **kw)
  # HSIC has condition number ~1/eps, so float32 hidden-state rounding shows at ~1e-3 (as in test_information).
  np.testing.assert_allclose(alone["mi"], packed["mi"], rtol=5e-3, atol=1e-6)
  assert np.all(np.asarray(alone["mi"])[~np.asarray(mask)] == 0)
  assert packed["ref_logp"].shape == (2, 2, 4) and packed["ref_std"].shape == (2, 4)
  # The cue is found where written; without one, the last real token is used.
  np.testing.assert_array_equal(cue_index(response, mask, 5), [[2, 3], [1, 4]])


def test_mi_extra_compiles_to_a_single_batched_lu(tiny_model):
  # Two independent batched LAPACK calls in one XLA CPU program can run at once and
  # deadlock jaxlib's intra-op pool (seen on 2 cores: every pool thread waiting inside
  # ParallelBatchMap). The answer factor and the token factors therefore share one LU.
  graphdef, params = nnx.split(tiny_model)
  prompt = jnp.array([[0, 1, 10, 11]], jnp.int32)
  response = jnp.array([[[20, 21, 5, 30, 2], [22, 23, 24, 2, 0]]], jnp.int32)
  mask = response != 0
  answer = jnp.array([[5, 30, 2, 0]], jnp.int32)
  solution = jnp.array([[0, 1, 40, 41]], jnp.int32)
  args = (graphdef, params, prompt, prompt != 0, response, mask, answer, answer != 0, solution, solution != 0)
  hlo = compute_extras.lower(*args, names=("mi",), temperature=1.0, cue_id=5).compile().as_text()
  assert hlo.count("getrf") == 1, [line for line in hlo.splitlines() if "getrf" in line]
