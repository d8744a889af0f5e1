import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.models.forward import response_logprobs
from tcred.sampling import sampler as sampler_module
from tcred.sampling.sampler import (_choose, _first_argmax, decode, decode_segments, empty_rows, finish, is_eos,
                                    prefill, sample_groups)

EOS, PAD = 2, 0


def _prompts():
  prompt = jnp.array([[0, 0, 1, 5, 6], [1, 7, 8, 9, 10]], jnp.int32)
  return prompt, prompt != PAD


def _sample(model, **kw):
  graphdef, params = nnx.split(model)
  prompt, valid = _prompts()
  args = dict(group_size=3, max_new_tokens=10, temperature=1.0, eos_id=EOS, pad_id=PAD)
  args.update(kw)
  return graphdef, params, prompt, valid, sample_groups(graphdef, params, prompt, valid, jax.random.key(0), **args)


def test_cached_decode_logprobs_equal_full_forward(tiny_model):
  graphdef, params, prompt, valid, r = _sample(tiny_model, temperature=0.8)
  assert r.tokens.shape == r.logp.shape == r.mask.shape == (2, 3, 10)
  logp, _ = response_logprobs(graphdef, params, prompt, valid, r.tokens, r.mask, temperature=0.8, chunk_size=7)
  np.testing.assert_allclose(np.where(r.mask, logp, 0), r.logp, atol=2e-5)


def test_decode_segments_split_long_budgets_only():
  assert decode_segments(1) == [1] and decode_segments(512) == [512]
  assert decode_segments(513) == [256, 513]  # round(513 / 2)
  assert decode_segments(2048) == [512, 1024, 1536, 2048]
  assert decode_segments(4096) == [1024, 2048, 3072, 4096]  # at most 4 segments


def test_segmented_decoding_samples_what_one_loop_samples(tiny_model, monkeypatch):
  # Segments of at most 4 steps carry only the slots filled by their end: the same tokens, log-probs
  # equal up to a float32 reduction's order, and the same whole cache back (prompt, response and the
  # slots after them), as one loop over the whole cache.
  model, prompt, valid = tiny_model, *_prompts()
  cache, last, prompt_len = prefill(model, prompt, valid, prompt.shape[1] + 13)  # 2 slots after the budget
  cache = cache._replace(valid=cache.valid.at[:, -1].set(True))  # something to keep in them
  run = lambda: decode(model, cache, empty_rows(2, 11, pad_id=PAD), last, prompt_len, jax.random.key(3),
                       slot_base=prompt.shape[1], temperature=0.9, top_p=1.0, greedy=False, eos_id=EOS, pad_id=PAD)
  whole = run()
  monkeypatch.setattr(sampler_module, "_DECODE_SEGMENT", 4)
  assert decode_segments(11) == [4, 7, 11]  # round(11 / 3 · i)
  segmented = run()
  np.testing.assert_array_equal(segmented[1].tokens, whole[1].tokens)
  np.testing.assert_allclose(segmented[1].logp, whole[1].logp, atol=1e-6)
  assert segmented[2] == whole[2]
  np.testing.assert_array_equal(segmented[0].valid, whole[0].valid)
  for a, b in zip(segmented[0].k + segmented[0].v, whole[0].k + whole[0].v):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_stops_at_eos_and_pads(tiny_model):
  # A random tiny model emits EOS with probability ~1/V per token: with 2 x 64 rows of
  # 40 tokens, many rows finish early and many do not.
  _, _, _, _, r = _sample(tiny_model, group_size=64, max_new_tokens=40)
  tokens, mask = np.asarray(r.tokens).reshape(-1, 40), np.asarray(r.mask).reshape(-1, 40)
  finished = np.asarray(r.finished).reshape(-1)
  assert 0 < finished.sum() < finished.size
  for row, m, f in zip(tokens, mask, finished):
    eos = np.flatnonzero(row == EOS)
    assert f == bool(eos.size)
    if eos.size:
      assert m[:eos[0] + 1].all() and not m[eos[0] + 1:].any()
      assert (row[eos[0] + 1:] == PAD).all()
    else:
      assert m.all()
  assert np.all(np.asarray(r.logp)[~np.asarray(r.mask)] == 0)


def test_greedy_is_deterministic_and_top_p_tiny_equals_greedy(tiny_model):
  *_, g1 = _sample(tiny_model, greedy=True)
  *_, g2 = _sample(tiny_model, greedy=True)
  np.testing.assert_array_equal(g1.tokens, g2.tokens)
  *_, tp = _sample(tiny_model, top_p=1e-6)
  np.testing.assert_array_equal(tp.tokens, g1.tokens)
  # All G rollouts of a prompt agree under greedy decoding.
  assert (np.asarray(g1.tokens) == np.asarray(g1.tokens)[:, :1]).all()


def test_different_keys_give_different_rollouts(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  prompt, valid = _prompts()
  kw = dict(group_size=4, max_new_tokens=8, temperature=1.0, eos_id=EOS, pad_id=PAD)
  a = sample_groups(graphdef, params, prompt, valid, jax.random.key(0), **kw)
  b = sample_groups(graphdef, params, prompt, valid, jax.random.key(1), **kw)
  assert not np.array_equal(a.tokens, b.tokens)
  # Rollouts within a group differ too (the prompt cache is shared, the samples are not).
  assert len({tuple(x) for x in np.asarray(a.tokens[1])}) > 1


def test_first_argmax_equals_argmax_with_ties():
  x = jax.random.normal(jax.random.key(0), (16, 300))
  x = x.at[3, 10].set(9.0).at[3, 200].set(9.0).at[5].set(0.0)  # ties: the first index wins
  x = x.at[7, :150].set(-jnp.inf)
  np.testing.assert_array_equal(jax.jit(_first_argmax)(x), jnp.argmax(x, axis=-1))
  np.testing.assert_array_equal(_first_argmax(x), jnp.argmax(x, axis=-1))


def test_choose_draws_the_same_tokens_as_jax_random_categorical():
  logits = 3.0 * jax.random.normal(jax.random.key(1), (16, 257))
  choose = jax.jit(lambda lg, k: _choose(lg, k, temperature=0.7, top_p=1.0, greedy=False)[0])
  for seed in range(20):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(choose(logits, key), jax.random.categorical(key, jax.nn.log_softmax(logits / 0.7), axis=-1))



def test_every_eos_id_of_a_tuple_ends_a_row():
  """A chat model has several EOS ids (end of turn, end of text): each one counts (the decode loop's `done`
  and `finish` share `is_eos`)."""
  tokens = jnp.array([[5, 7, 9, 0], [5, 9, 0, 0], [5, 5, 5, 5]], jnp.int32)
  np.testing.assert_array_equal(is_eos(tokens, (7, 9)), np.isin(np.asarray(tokens), (7, 9)))
  np.testing.assert_array_equal(is_eos(tokens, 9), np.asarray(tokens) == 9)
  rows = empty_rows(3, 4, pad_id=0)._replace(tokens=tokens, length=jnp.array([2, 2, 4], jnp.int32))
  mask, finished = finish(rows, (7, 9))
  assert np.asarray(finished).tolist() == [True, True, False]
  assert np.asarray(finish(rows, 9)[1]).tolist() == [False, True, False]
  assert np.asarray(mask).sum(-1).tolist() == [2, 2, 4]
