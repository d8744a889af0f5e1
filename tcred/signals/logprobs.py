"""Fused per-token log-probabilities and entropy from hidden states.

Re-exported as `tcred.signals.entropy.token_logprobs_and_entropy`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logprobs_and_entropy(hidden: jax.Array, unembed: jax.Array, targets: jax.Array, *,
                               temperature: float, chunk_size: int = 1024
                               ) -> tuple[jax.Array, jax.Array]:
  """Log-probability of each target token and the entropy of each next-token distribution.

  With `z_t = hidden_t @ unembed / temperature` and `p_t = softmax(z_t)`:
  `logp_t = z_t[targets_t] − logsumexp(z_t)` and `H_t = −Σ_v p_tv log p_tv
  = logsumexp(z_t) − Σ_v p_tv z_tv` (entropy of arXiv 2506.01939, in nats).

  The tokens are processed `chunk_size` at a time under `jax.checkpoint`, so at
  most `[chunk_size, V]` logits exist at once, in the forward and the backward
  pass (the backward recomputes each chunk's logits). Differentiable in `hidden`
  and `unembed`; outputs are float32 whatever the input dtype.

  Args:
    hidden: `[..., T, D]` final hidden states.
    unembed: `[D, V]` output projection.
    targets: `[..., T]` int token ids whose log-probabilities are wanted.
    temperature: sampling temperature τ > 0 (static).
    chunk_size: tokens per chunk (static).

  Returns:
    `(logp [..., T], entropy [..., T])`, float32.
  """
  if hidden.shape[:-1] != targets.shape:
    raise ValueError(f"hidden {hidden.shape} and targets {targets.shape} disagree: "
                     "expected hidden [..., T, D] and targets [..., T]")
  if hidden.shape[-1] != unembed.shape[0]:
    raise ValueError(f"hidden width {hidden.shape[-1]} != unembed rows {unembed.shape[0]} "
                     "(unembed must be [D, V])")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  lead = targets.shape
  d = hidden.shape[-1]
  h = hidden.reshape(-1, d)
  y = targets.reshape(-1).astype(jnp.int32)
  n = h.shape[0]
  c = max(1, min(chunk_size, n))
  num_chunks = -(-n // c)
  pad = num_chunks * c - n
  if pad:
    h = jnp.pad(h, ((0, pad), (0, 0)))
    y = jnp.pad(y, (0, pad))

  @jax.checkpoint
  def chunk(args):
    hc, yc = args  # [C, D], [C]
    z = jnp.dot(hc, unembed, preferred_element_type=jnp.float32) / temperature  # [C, V]
    lse = jax.nn.logsumexp(z, axis=-1)  # [C]
    z_y = jnp.take_along_axis(z, yc[:, None], axis=-1)[:, 0]
    p = jnp.exp(z - lse[:, None])
    return z_y - lse, lse - jnp.sum(p * z, axis=-1)

  logp, ent = jax.lax.map(chunk, (h.reshape(num_chunks, c, d), y.reshape(num_chunks, c)))
  logp = logp.reshape(-1)[:n].reshape(lead)
  ent = ent.reshape(-1)[:n].reshape(lead)
  return logp, ent
