"""A Flax NNX decoder of the Llama/Qwen2/Qwen3 family.

RMSNorm, rotary position embeddings (HF "rotate half" convention; default, linear
or Llama-3 frequencies), SwiGLU MLP, grouped-query attention (optional q/k/v
biases, optional per-head q/k RMSNorm), tied or untied output head. Module and parameter names
follow Hugging Face's (`embed_tokens`, `layers[i].self_attn.q_proj`, ...), so
safetensors checkpoints map onto the NNX state by name (kernels transposed).

The model returns final *hidden states*; logits are formed by the caller from
`unembedding()` so the training path never materialises `[B, T, V]` logits
(see `tcred.signals.entropy.token_logprobs_and_entropy`).

Shapes: B batch, T new tokens, S cache slots, D width, H query heads,
K key-value heads, R = H // K, E head dim, F MLP width, V vocabulary.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tcred.models.config import ModelConfig

_MASK_VALUE = -1e30  # Finite, so a fully masked row (a pad query) stays NaN-free.
# Causal self-attention without a cache splits its queries into blocks of about this
# many tokens (at most `_MAX_QUERY_BLOCKS`, unless a block would then hold more than
# `_MAX_BLOCK_ROWS` queries), each attending only keys up to its end.
_QUERY_BLOCK = 96
_MAX_QUERY_BLOCKS = 4
_MAX_BLOCK_ROWS = 256


def query_block_count(t: int) -> int:
  """How many causal query blocks `t` new tokens attend in."""
  return max(min(_MAX_QUERY_BLOCKS, -(-t // _QUERY_BLOCK)), -(-t // _MAX_BLOCK_ROWS))


class KVCache(NamedTuple):
  """Key/value cache of every layer.

  Attributes:
    k: per layer, keys `[B, K, E, S]`, head-major and transposed: the score
      product `q·k` is then a plain `[R·T, E] x [E, S]` matmul per head, which
      XLA:CPU runs ~1.5x faster than contracting both operands' minor axes when
      decoding one token per row.
    v: per layer, values `[B, K, S, E]`.
    valid: `[B, S]` bool, whether a slot holds a real (non-padding) token.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  valid: jax.Array

  @classmethod
  def empty(cls, config: ModelConfig, batch: int, slots: int, dtype=jnp.float32) -> "KVCache":
    k_shape = (batch, config.num_key_value_heads, config.dim_per_head, slots)
    v_shape = (batch, config.num_key_value_heads, slots, config.dim_per_head)
    zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_hidden_layers))
    return cls(k=zeros(k_shape), v=zeros(v_shape), valid=jnp.zeros((batch, slots), bool))

  def repeat(self, n: int) -> "KVCache":
    """Repeats every batch row `n` times (prompt cache -> group of rollouts)."""
    rep = lambda x: jnp.repeat(x, n, axis=0)
    return KVCache(k=tuple(map(rep, self.k)), v=tuple(map(rep, self.v)), valid=rep(self.valid))

  def slots(self, lo: int, hi: int) -> "KVCache":
    """Slots `[lo, hi)` of every layer (static bounds)."""
    return self._along_slots(lambda axis, x: jax.lax.slice_in_dim(x, lo, hi, axis=axis))

  def join(self, other: "KVCache") -> "KVCache":
    """This cache's slots followed by `other`'s."""
    return self._along_slots(lambda axis, x, y: jnp.concatenate([x, y], axis=axis), other)

  def grow(self, n: int) -> "KVCache":
    """`n` empty slots (zero keys and values, not valid) appended after the existing ones."""
    return self._along_slots(lambda axis, x: jnp.pad(x, [(0, n if a == axis else 0) for a in range(x.ndim)]))

  def _along_slots(self, f, *others: "KVCache") -> "KVCache":
    """`f(axis, x, *ys)` on each array of this cache (and the same array of `others`) along its slot axis: 3 for
    keys `[B, K, E, S]`, 2 for values `[B, K, S, E]`, 1 for validity `[B, S]`."""
    return KVCache(k=tuple(f(3, *xs) for xs in zip(self.k, *(o.k for o in others))),
                   v=tuple(f(2, *xs) for xs in zip(self.v, *(o.v for o in others))),
                   valid=f(1, self.valid, *(o.valid for o in others)))


class RMSNorm(nnx.Module):
  """`x / sqrt(mean(x²) + eps) * weight`, computed in float32."""

  def __init__(self, dim: int, *, eps: float):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * self.weight[...]).astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> jax.Array:
  """RoPE inverse frequencies `[E/2]` (float32) of `config.rope_type`.

  default: `f_i = θ^(−2i/E)` (RoFormer, arXiv 2104.09864).
  linear: `f_i / factor` (position interpolation, arXiv 2306.15595).
  llama3: with wavelength `λ_i = 2π / f_i`, context `L` = rope_original_max_position_embeddings,
    `λ_lo = L / low_freq_factor`, `λ_hi = L / high_freq_factor`:
    `f_i` if `λ_i < λ_hi`; `f_i / factor` if `λ_i > λ_lo`; between them
    `(1 − s) f_i / factor + s f_i` with `s = (L / λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor)`
    (Llama 3.1, arXiv 2407.21783; HF's `rope_type="llama3"`).
  """
  e = config.dim_per_head
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, e, 2, dtype=jnp.float32) / e))  # [E/2]
  if config.rope_type == "linear":
    inv_freq = inv_freq / config.rope_factor
  elif config.rope_type == "llama3":
    factor, context = config.rope_factor, config.rope_original_max_position_embeddings
    low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (context / wavelen - low) / (high - low)
    ramp = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    inv_freq = jnp.where(wavelen < context / high, inv_freq,
                         jnp.where(wavelen > context / low, inv_freq / factor, ramp))
  return inv_freq


def rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotary embedding of `x [B, T, heads, E]` at integer `positions [B, T]`, frequencies `inv_freq [E/2]`."""
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, E/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, E]
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def _linear(din: int, dout: int, *, bias: bool, config: ModelConfig, rngs: nnx.Rngs) -> nnx.Linear:
  init = nnx.initializers.normal(config.initializer_range)
  return nnx.Linear(din, dout, use_bias=bias, kernel_init=init, rngs=rngs)


def _apply(linear: nnx.Linear, x: jax.Array) -> jax.Array:
  """`linear` over the last axis of `x [..., Din]`, as one `[N, Din] x [Din, Dout]` matmul.

  XLA:CPU runs the weight gradient of a 3-D `[B, T, Din]` input (a contraction over
  both B and T) ~25% slower than the same matmul on the flattened `[B·T, Din]` rows.
  """
  return linear(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class Attention(nnx.Module):
  """Grouped-query self-attention with an optional KV cache (and Qwen3's q/k head norms)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, h, k, e = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                  config.dim_per_head)
    self.num_heads, self.num_kv_heads, self.head_dim = h, k, e
    self.config = config
    self.q_proj = _linear(d, h * e, bias=config.attention_bias, config=config, rngs=rngs)
    self.k_proj = _linear(d, k * e, bias=config.attention_bias, config=config, rngs=rngs)
    self.v_proj = _linear(d, k * e, bias=config.attention_bias, config=config, rngs=rngs)
    self.o_proj = _linear(h * e, d, bias=False, config=config, rngs=rngs)
    if config.qk_norm:
      self.q_norm = RMSNorm(e, eps=config.rms_norm_eps)
      self.k_norm = RMSNorm(e, eps=config.rms_norm_eps)

  def __call__(self, x, positions, mask, k_cache=None, v_cache=None, index=None, query_blocks=1):
    """x `[B, T, D]`, positions `[B, T]`, mask `[B, T, S]` (query may attend key).

    Without a cache S = T. With one, the new keys/values are written at slots
    `[index, index + T)` and the updated caches are returned. `query_blocks`
    (static) splits the queries into that many blocks, block i attending only
    keys before its end (with a cache, `index` must then be a Python int): exact
    whenever `mask` is causal (no key after its query), and it skips most of the
    masked upper triangle. Each block's scores are recomputed in the backward
    (`_block_attention`), so no `[T, S]` array is kept for it.
    """
    b, t, _ = x.shape
    q = _apply(self.q_proj, x).reshape(b, t, self.num_heads, self.head_dim)
    k = _apply(self.k_proj, x).reshape(b, t, self.num_kv_heads, self.head_dim)
    if self.config.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    inv_freq = rope_inv_freq(self.config)
    q, k = rope(q, positions, inv_freq), rope(k, positions, inv_freq)
    v = _apply(self.v_proj, x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = v.transpose(0, 2, 1, 3)  # [B, K, T, E]
    if k_cache is None:
      k = k.transpose(0, 2, 1, 3)  # [B, K, T, E]
    else:
      k = jax.lax.dynamic_update_slice_in_dim(k_cache, k.transpose(0, 2, 3, 1).astype(k_cache.dtype), index,
                                              axis=3)  # [B, K, E, S]
      v = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=2)
    q = q.reshape(b, t, self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim)
    first = 0 if k_cache is None else index  # the slot of the first new token (a Python int if blocked)
    edges = [round(i * t / query_blocks) for i in range(query_blocks + 1)]
    spans = tuple((lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)
    out = _block_attention(spans=spans, keys=tuple(first + hi if query_blocks > 1 else None for _, hi in spans),
                           key_dim=3 if k_cache is None else 2, scale=self.head_dim ** -0.5)(q, k, v, mask)
    return _apply(self.o_proj, out.reshape(b, t, self.num_heads * self.head_dim)), k, v


def _block_attention(*, spans, keys, key_dim, scale):
  """`f(q, k, v, mask)`: causal softmax attention of `q` `[B, T, K, R, E]` in query blocks, `[B, T, K, R, E]`,
  with a backward that recomputes the scores block by block (flash-attention style).

  `spans`: the blocks' query rows `((lo, hi), ...)`, covering `[0, T)` in order; `keys`: the slots block i
  attends, `keys[i]` (None: every slot). v `[B, K, S, E]`, mask `[B, T, S]`; k is `[B, K, S, E]`
  (`key_dim = 3`, no cache) or the cache's `[B, K, E, S]` (`key_dim = 2`). Exact whenever no query of a
  block may attend a slot from its `keys` on.

  The forward keeps, besides its inputs (the layer's q, k, v and mask), only the output and each row's max
  and sum of exponentials; the backward recomputes each block's float32 scores and probabilities from them
  (bit-identical to the forward's) instead of keeping `[hi − lo, keys]` of each per head and layer, and uses
  the row sums of dO·O in place of the softmax's own `[hi − lo, keys]` reduction.

  The backward runs the blocks one after another, last block first (the order in which autodiff met them when
  each block was its own function, so the key and value gradients add up in the same order), accumulating the
  key and value gradients in place and concatenating the query gradients. Each block's recomputation reads
  `x + 0·c` for each saved x it broadcasts (q, the row maxima and sums), c one element of the incoming
  cotangent for the first block and of the previous block's gradients for the others: values XLA cannot fold
  (`0·c` is not folded for floats) or merge with the forward (`jax.checkpoint` does not bound memory on
  XLA:CPU, jax 0.10: its pipeline drops the optimization barriers, then CSE merges the recomputation into
  the forward), and that order the blocks. The forward orders its blocks the same way (block i reads
  `q + 0·c`, c an element of block i − 1's output), and the scale and the masked scores' fill read the
  same `0·c` (as constants XLA:CPU materialised their broadcasts to each block's `[hi − lo, keys]` shape
  ahead of time and kept them live until used). Without that order XLA interleaved the blocks, and their
  `[hi − lo, keys]` transients, about half the `[T, T]` triangle per head, were live at once: the train
  step's memory grew faster than T (issue 27; compiled temporaries of bench-27m's step at G = 4 and
  T = 4,096: 9.7 GB before, 7.1 after). A non-finite cotangent element makes the gradients NaN; they would
  not be finite anyway.
  """
  batch = ((0, 1), (0, 1))

  def inputs(i, q, k, v, mask):  # block i's slices; q as [B, K, R·t, E]
    lo, hi = spans[i]
    if (lo, hi) != (0, q.shape[1]):
      q, mask = q[:, lo:hi], mask[:, lo:hi]
    if keys[i] is not None:
      k = k[..., :keys[i]] if key_dim == 2 else k[:, :, :keys[i]]
      v, mask = v[:, :, :keys[i]], mask[..., :keys[i]]
    b, t, kh, r, e = q.shape
    return q.transpose(0, 2, 3, 1, 4).reshape(b, kh, r * t, e), k, v, mask

  def scores(qm, k, mask, r, order):  # [B, K, R·t, S] float32, masked
    b, kh, rt, _ = qm.shape
    # Both products as [B, K] batches of (R·t)-row matmuls with the queries' side on the left
    # (XLA:CPU otherwise picks `vᵀ p`, a 64 × 2 matmul per batch when decoding one token).
    sc = jax.lax.dot_general(qm, k, (((3,), (key_dim,)), batch), preferred_element_type=jnp.float32)
    # The scale and the fill read `order` (see the docstring).
    sc = sc.reshape(b, kh, r, rt // r, -1) * (scale + order)
    return jnp.where(mask[:, None, None, :, :], sc, _MASK_VALUE + order).reshape(b, kh, rt, -1)

  def rows_layout(om, q):  # [B, K, R·t, E] -> [B, t, K, R, E]
    b, _, kh, r, e = q.shape
    return om.reshape(b, kh, r, -1, e).transpose(0, 3, 1, 2, 4)

  def forward(q, k, v, mask):
    outs, saved = [], []
    order = jnp.float32(0.0)
    for i in range(len(spans)):
      qm, kb, vb, mb = inputs(i, q + order.astype(q.dtype) if i else q, k, v, mask)
      sc = scores(qm, kb, mb, q.shape[3], order)
      top = jnp.max(sc, axis=-1, keepdims=True)
      unnormalised = jnp.exp(sc - top)
      total = jnp.sum(unnormalised, axis=-1, keepdims=True)
      om = jax.lax.dot_general((unnormalised / total).astype(vb.dtype), vb, (((3,), (2,)), batch))  # [B, K, R·t, E]
      outs.append(rows_layout(om, q))
      saved.append((om, top, total))
      order = 0.0 * om.reshape(-1)[0].astype(jnp.float32)  # the next block waits for this one
    return (outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)), tuple(saved)

  @jax.custom_vjp
  def f(q, k, v, mask):
    return forward(q, k, v, mask)[0]

  def f_forward(q, k, v, mask):
    out, saved = forward(q, k, v, mask)
    return out, (q, k, v, mask, saved)

  def f_backward(residuals, cotangent):
    q_full, k_full, v_full, mask, saved = residuals
    b, _, kh, r, e = cotangent.shape
    key_axis = 2 if key_dim == 3 else 3
    dk_full = dv_full = None
    dqs = [None] * len(spans)
    order = 0.0 * cotangent.reshape(-1)[0].astype(jnp.float32)  # see the docstring
    for i in reversed(range(len(spans))):
      om, top, total = saved[i]
      lo, hi = spans[i]
      q_in, top, total = q_full + order.astype(q_full.dtype), top + order, total + order
      qm, k, v, mask_i = inputs(i, q_in, k_full, v_full, mask)
      probs = jnp.exp(scores(qm, k, mask_i, r, order) - top) / total  # as the forward's, float32
      dom = cotangent[:, lo:hi].transpose(0, 2, 3, 1, 4).reshape(b, kh, r * (hi - lo), e)
      dv = jax.lax.dot_general(probs.astype(v.dtype), dom, (((2,), (2,)), batch))  # [B, K, S, E]
      dp = jax.lax.dot_general(dom, v, (((3,), (3,)), batch), preferred_element_type=jnp.float32)
      row = jnp.sum(dom.astype(jnp.float32) * om.astype(jnp.float32), axis=-1, keepdims=True)  # Σ_s p·dp
      ds = (probs * (dp - row) * (scale + order)).astype(qm.dtype)  # [B, K, R·t, S]
      dq = jax.lax.dot_general(ds, k, (((3,), (5 - key_dim,)), batch))  # [B, K, R·t, E]
      if key_dim == 3:
        dk = jax.lax.dot_general(ds, qm, (((2,), (2,)), batch))  # [B, K, S, E]
      else:
        dk = jax.lax.dot_general(qm, ds, (((2,), (2,)), batch))  # [B, K, E, S]
      dqs[i] = rows_layout(dq, q_full)
      if dk_full is None:  # the last block attends the most keys: widen its gradients once
        widen = lambda x, axis, size: jnp.pad(x, [(0, size - x.shape[axis]) if a == axis else (0, 0)
                                                  for a in range(x.ndim)])
        dk_full = widen(dk, key_axis, k_full.shape[key_axis])
        dv_full = widen(dv, 2, v_full.shape[2])
      else:
        n = dk.shape[key_axis]
        dk_full = dk_full.at[(slice(None),) * key_axis + (slice(0, n),)].add(dk)
        dv_full = dv_full.at[:, :, :n].add(dv)
      order = 0.0 * (dqs[i].reshape(-1)[0] + dk_full.reshape(-1)[0] + dv_full.reshape(-1)[0]).astype(jnp.float32)
    dq_full = dqs[0] if len(dqs) == 1 else jnp.concatenate(dqs, axis=1)
    return dq_full.astype(q_full.dtype), dk_full.astype(k_full.dtype), dv_full.astype(v_full.dtype), None

  f.defvjp(f_forward, f_backward)
  return f


class MLP(nnx.Module):
  """SwiGLU: `down(silu(gate(x)) * up(x))`."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, f = config.hidden_size, config.intermediate_size
    self.gate_proj = _linear(d, f, bias=False, config=config, rngs=rngs)
    self.up_proj = _linear(d, f, bias=False, config=config, rngs=rngs)
    self.down_proj = _linear(f, d, bias=False, config=config, rngs=rngs)

  def __call__(self, x):
    return _apply(self.down_proj, jax.nn.silu(_apply(self.gate_proj, x)) * _apply(self.up_proj, x))


class DecoderLayer(nnx.Module):

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    self.self_attn = Attention(config, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x, positions, mask, k_cache=None, v_cache=None, index=None, query_blocks=1):
    attn, k, v = self.self_attn(self.input_layernorm(x), positions, mask, k_cache, v_cache, index,
                                query_blocks)
    x = x + attn
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, k, v


class Decoder(nnx.Module):
  """The policy: tokens -> final hidden states (and an updated KV cache)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed_tokens = nnx.Embed(
        config.vocab_size, config.hidden_size,
        embedding_init=nnx.initializers.normal(config.initializer_range), rngs=rngs)
    self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
    self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    if not config.tie_word_embeddings:
      self.lm_head = _linear(config.hidden_size, config.vocab_size, bias=False, config=config, rngs=rngs)

  def unembedding(self) -> jax.Array:
    """The output projection `[D, V]`."""
    if self.config.tie_word_embeddings:
      return self.embed_tokens.embedding[...].T
    return self.lm_head.kernel[...]

  def __call__(self, tokens: jax.Array, positions: jax.Array, token_valid: jax.Array,
               cache: KVCache | None = None, index: jax.Array | int | None = None,
               attention_mask: jax.Array | None = None, hidden_layer: int = -1,
               final_norm: bool = True, block_queries: bool = False) -> tuple[jax.Array, KVCache | None]:
    """Runs the decoder.

    Args:
      tokens: `[B, T]` int token ids.
      positions: `[B, T]` int RoPE positions (count of real tokens before each token).
      token_valid: `[B, T]` bool, False on padding (padding is never attended to).
      cache: optional KV cache with S slots; the tokens are written at slots
        `[index, index + T)` and attend to every valid earlier slot.
      index: first cache slot of `tokens` (scalar, shared by the batch).
      attention_mask: optional `[B, T, T]` bool, query t may attend key s; replaces the
        causal mask (no cache). Used to pack several continuations of one prefix
        into one row (e.g. answer copies after every prefix).
      hidden_layer: static; the decoder layer whose output is returned (negative: from
        the end; default −1, the last).
      final_norm: static; apply the final RMSNorm to that output (default True: the
        final hidden states the head reads). HSIC MI offers the other choices
        (`tcred.signals.information.MIInputs`).
      block_queries: static; with a cache and a Python int `index`, split many new tokens into
        causal query blocks as without a cache (each block attends the slots before its end).
        Off by default: the sampler's prefill keeps its one block.

    Returns:
      Hidden states `[B, T, D]` (by default the final ones, after the last RMSNorm) and
      the updated cache (every layer's).
    """
    n_layers = len(self.layers)
    if not -n_layers <= hidden_layer < n_layers:
      raise ValueError(f"hidden_layer must be in [{-n_layers}, {n_layers}), got {hidden_layer}")
    picked_layer = hidden_layer % n_layers
    b, t = tokens.shape
    x = self.embed_tokens(tokens)
    if cache is None:
      key_valid = token_valid  # [B, S=T]
      query_slot = jnp.arange(t)
    else:
      key_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, token_valid, index, axis=1)
      query_slot = index + jnp.arange(t)
    key_slot = jnp.arange(key_valid.shape[1])
    query_blocks = 1
    if attention_mask is None:
      if cache is None or (block_queries and isinstance(index, int)):
        query_blocks = query_block_count(t)
      mask = key_valid[:, None, :] & (key_slot[None, None, :] <= query_slot[None, :, None])  # [B, T, S]
    else:
      if cache is not None or attention_mask.shape != (b, t, t):
        raise ValueError(f"attention_mask must be [B, T, T] = {(b, t, t)} without a cache, "
                         f"got {attention_mask.shape}")
      mask = attention_mask & key_valid[:, None, :]
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      kc = vc = None
      if cache is not None:
        kc, vc = cache.k[i], cache.v[i]
      x, k, v = layer(x, positions, mask, kc, vc, index, query_blocks)
      new_k.append(k)
      new_v.append(v)
      if i == picked_layer:
        picked = x
    hidden = self.norm(picked) if final_norm else picked
    if cache is None:
      return hidden, None
    return hidden, KVCache(k=tuple(new_k), v=tuple(new_v), valid=key_valid)


def positions_from_mask(valid: jax.Array) -> jax.Array:
  """RoPE positions `[B, T]` for left-padded rows: number of valid tokens before each."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)
