"""Fused per-token log-probabilities and entropy from hidden states.

The output head of `tcred.models.decoder.Decoder` as training and the signals use it (re-exported as
`tcred.signals.entropy.token_logprobs_and_entropy`).

The logits `[N, V]` are never held in memory: the forward pass visits
`[chunk_size, vocab_chunk_size]` blocks of them with an online (streaming)
log-sum-exp, and a custom VJP recomputes each block once in the backward pass
from the saved per-token statistics (log-sum-exp and mean logit), so the
backward needs no second softmax/normalisation pass. Cost: the logits matmul
runs twice (forward, backward recompute) plus the two gradient matmuls, i.e.
4 matmuls of `2·N·D·V` FLOPs against 3 for materialised logits.

Small logits (`[N, V]` float32 within `saved_logits_bytes`, e.g. 4,096 tokens of
bench-27m's V = 8,192 = 128 MiB) are instead computed whole and kept for the backward
pass: 3 matmuls, the same values and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEFAULT_VOCAB_CHUNK = 4096
DEFAULT_SAVED_LOGITS_BYTES = 256 * 2 ** 20


def logits_saved(n_tokens: int, vocab_size: int, saved_logits_bytes: int = DEFAULT_SAVED_LOGITS_BYTES) -> bool:
  """Whether `token_logprobs_and_entropy` keeps the whole float32 logits of `n_tokens` tokens for
  the backward pass (3 matmuls) rather than streaming and recomputing them in blocks (4)."""
  return n_tokens * vocab_size * 4 <= saved_logits_bytes


def _check_head_inputs(hidden, unembed, targets, temperature, chunk_size: int, vocab_chunk_size: int) -> None:
  """Shapes `[..., T, D]`, `[D, V]`, `[..., T]`, a positive temperature and chunk sizes (one check for the
  log-prob head and the per-token gradient norms)."""
  if hidden.shape[:-1] != targets.shape:
    raise ValueError(f"hidden {hidden.shape} and targets {targets.shape} disagree: "
                     "expected hidden [..., T, D] and targets [..., T]")
  if unembed.ndim != 2 or hidden.shape[-1] != unembed.shape[0]:
    raise ValueError(f"hidden width {hidden.shape[-1]} != unembed rows {unembed.shape[0]} "
                     "(unembed must be [D, V])")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if chunk_size < 1 or vocab_chunk_size < 1:
    raise ValueError(f"chunk_size and vocab_chunk_size must be >= 1, got {chunk_size}, {vocab_chunk_size}")


def token_logprobs_and_entropy(hidden: jax.Array, unembed: jax.Array, targets: jax.Array, *,
                               temperature: float, chunk_size: int = 1024,
                               vocab_chunk_size: int = DEFAULT_VOCAB_CHUNK,
                               saved_logits_bytes: int = DEFAULT_SAVED_LOGITS_BYTES
                               ) -> tuple[jax.Array, jax.Array]:
  """Log-probability of each target token and the entropy of each next-token distribution.

  With `z_t = hidden_t @ unembed / temperature` and `p_t = softmax(z_t)`:
  `logp_t = z_t[targets_t] − logsumexp(z_t)` and `H_t = −Σ_v p_tv log p_tv
  = logsumexp(z_t) − Σ_v p_tv z_tv` (entropy of arXiv 2506.01939, in nats).

  Memory: at most a few `[chunk_size, vocab_chunk_size]` blocks of logits exist at
  once, in the forward and in the backward pass. The gradient (custom VJP) is
  `∂logp_t/∂z_tv = 1[v = y_t] − p_tv` and `∂H_t/∂z_tv = −p_tv (z_tv − Σ_u p_tu z_tu)`,
  divided by the temperature for the raw logits. Differentiable in `hidden` and
  `unembed` (first order, reverse mode); outputs are float32 whatever the input dtype.

  Args:
    hidden: `[..., T, D]` final hidden states.
    unembed: `[D, V]` output projection.
    targets: `[..., T]` int token ids whose log-probabilities are wanted.
    temperature: sampling temperature τ > 0 (static).
    chunk_size: tokens per block (static).
    vocab_chunk_size: vocabulary entries per block (static); V need not be a multiple.
    saved_logits_bytes: if the float32 logits `[N, V]` take at most this many bytes
      (static), they are computed in one matmul and saved for the backward pass
      instead of streamed in blocks (one matmul fewer, `4·N·V` bytes held); 0 always
      streams.

  Returns:
    `(logp [..., T], entropy [..., T])`, float32.
  """
  _check_head_inputs(hidden, unembed, targets, temperature, chunk_size, vocab_chunk_size)
  lead = targets.shape
  d, v = unembed.shape
  h = hidden.reshape(-1, d)
  y = targets.reshape(-1).astype(jnp.int32)
  n = h.shape[0]
  if logits_saved(n, v, saved_logits_bytes):
    logp, ent = _saved(h, unembed, y, float(temperature))
    return logp.reshape(lead), ent.reshape(lead)
  c = max(1, min(chunk_size, n))
  pad = -n % c
  if pad:
    h = jnp.pad(h, ((0, pad), (0, 0)))
    y = jnp.pad(y, (0, pad))
  logp, ent = _fused(h, unembed, y, float(temperature), c, max(1, min(vocab_chunk_size, v)))
  return logp[:n].reshape(lead), ent[:n].reshape(lead)


def _block(h, u, i, j, *, tau, c, vc):
  """Block (i, j): hidden rows `[C, D]`, its logits `[C, Vc]` (tempered, float32), the
  block's first column, and `fresh [Vc]`, False on columns an earlier block already
  covered (the last block is shifted left to stay inside V instead of padding U)."""
  v = u.shape[1]
  start = jnp.minimum(j * vc, v - vc)
  hc = jax.lax.dynamic_slice_in_dim(h, i * c, c, axis=0)  # [C, D]
  uc = jax.lax.dynamic_slice_in_dim(u, start, vc, axis=1)  # [D, Vc]
  z = jnp.dot(hc, uc, preferred_element_type=jnp.float32) / tau  # [C, Vc]
  fresh = start + jnp.arange(vc) >= j * vc  # [Vc]
  return hc, uc, z, start, fresh


def _dlogits(z, hit, lse, mean_z, g_logp, g_ent, tau):
  """`d(Σ g_logp·logp + g_ent·H)/dz_raw` on a block of tempered logits `z [C, Vc]`;
  `hit [C, Vc]` marks each token's target column, the other arguments are `[C, 1]`."""
  p = jnp.exp(z - lse)
  return (jnp.where(hit, g_logp, 0.0) - p * (g_logp + g_ent * (z - mean_z))) / tau


def _stats(h, u, y, tau, c, vc, *, grads: bool = False):
  """Per token: log-sum-exp `[N]`, mean logit `Σ p z` `[N]`, target logit `[N]` (tempered).

  `grads=True` (`token_grad_norms`) also accumulates, in the same streaming pass, `Σ_v p_v²` `[N]` and
  the expected unembedding column `Σ_v p_v U[:, v]` `[N, D]` (float32), returned after the three.
  """
  n, v = h.shape[0], u.shape[1]
  num_v = -(-v // vc)

  def token_chunk(i, out):
    yc = jax.lax.dynamic_slice_in_dim(y, i * c, c)  # [C]

    def vocab_chunk(j, acc):
      m, s, a, zy = acc[:4]  # running max, Σ e^(z−m), Σ e^(z−m) z, target logit; each [C]
      _, uc, z, start, fresh = _block(h, u, i, j, tau=tau, c=c, vc=vc)
      zf = jnp.where(fresh, z, -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(zf, axis=-1))
      e = jnp.exp(zf - m_new[:, None])  # [C, Vc], 0 on stale columns
      scale = jnp.exp(m - m_new)
      s = s * scale + jnp.sum(e, axis=-1)
      a = a * scale + jnp.sum(e * jnp.where(fresh, z, 0.0), axis=-1)
      hit = (start + jnp.arange(vc))[None, :] == yc[:, None]
      zy = zy + jnp.sum(jnp.where(hit & fresh, z, 0.0), axis=-1)
      if not grads:
        return m_new, s, a, zy
      q, mu = acc[4:]  # Σ e^(2(z−m)) [C], Σ e^(z−m) U[:, v] [C, D]
      q = q * scale ** 2 + jnp.sum(e * e, axis=-1)
      mu = mu * scale[:, None] + jnp.dot(e, uc.T.astype(jnp.float32))
      return m_new, s, a, zy, q, mu

    zeros = jnp.zeros((c,), jnp.float32)
    init = (jnp.full((c,), -jnp.inf), zeros, zeros, zeros)
    if grads:
      init += (zeros, jnp.zeros((c, u.shape[0]), jnp.float32))
    acc = jax.lax.fori_loop(0, num_v, vocab_chunk, init)
    m, s, a, zy = acc[:4]
    lse = m + jnp.log(s)
    vals = (lse, a / s, zy)
    if grads:
      vals += (acc[4] / s ** 2, acc[5] / s[:, None])
    upd = lambda x, val: jax.lax.dynamic_update_slice_in_dim(x, val, i * c, axis=0)
    return tuple(upd(x, val) for x, val in zip(out, vals))

  zeros = jnp.zeros((n,), jnp.float32)
  init = (zeros, zeros, zeros)
  if grads:
    init += (zeros, jnp.zeros((n, u.shape[0]), jnp.float32))
  return jax.lax.fori_loop(0, n // c, token_chunk, init)


def token_grad_norms(hidden: jax.Array, unembed: jax.Array, targets: jax.Array, *, temperature: float,
                     chunk_size: int = 1024, vocab_chunk_size: int = DEFAULT_VOCAB_CHUNK
                     ) -> tuple[jax.Array, jax.Array]:
  """Per-token gradient norms of the sampled token's log-probability (GMTS), never holding `[N, V]`.

  With `z = h U / τ`, `p = softmax(z)` and target y (closed form, no autodiff):

    ∂ log p_y / ∂h = (U[:, y] − U p) / τ            ->  ‖U[:, y] − Σ_v p_v U[:, v]‖ / τ
    ∂ log p_y / ∂U = h (e_y − p)ᵀ / τ               ->  ‖h‖ · sqrt(1 − 2 p_y + Σ_v p_v²) / τ

  The expected column `Σ_v p_v U[:, v]` `[N, D]` and `Σ_v p_v²` are accumulated in the same streaming
  pass over `[chunk_size, vocab_chunk_size]` logit blocks as the log-sum-exp (`_stats`), so memory is
  that of `token_logprobs_and_entropy` plus `[N, D]`. GMTS (Gradient Magnitude-based Token Selection,
  OpenReview JGvOicAo3g) ranks tokens by a gradient magnitude; here the log-probability's gradient with
  respect to the last hidden state (the input of the unembedding) or to the unembedding.

  Args:
    hidden: `[..., T, D]` final hidden states; unembed: `[D, V]`; targets: `[..., T]` int token ids.
    temperature, chunk_size, vocab_chunk_size: as `token_logprobs_and_entropy`.

  Returns:
    `(hidden_norm [..., T], unembed_norm [..., T])` float32, not differentiable (inputs `stop_gradient`ed).
  """
  _check_head_inputs(hidden, unembed, targets, temperature, chunk_size, vocab_chunk_size)
  lead = targets.shape
  d, v = unembed.shape
  h = jax.lax.stop_gradient(hidden).reshape(-1, d)
  u = jax.lax.stop_gradient(unembed)
  y = targets.reshape(-1).astype(jnp.int32)
  n = h.shape[0]
  c = max(1, min(chunk_size, n))
  pad = -n % c
  if pad:
    h = jnp.pad(h, ((0, pad), (0, 0)))
    y = jnp.pad(y, (0, pad))
  tau = float(temperature)
  lse, _, zy, p_sq, mean_col = _stats(h, u, y, tau, c, max(1, min(vocab_chunk_size, v)), grads=True)
  u_y = jnp.take(u.T, y, axis=0).astype(jnp.float32)  # [N, D] the targets' columns
  hidden_norm = jnp.linalg.norm(u_y - mean_col, axis=-1) / tau
  p_y = jnp.exp(zy - lse)
  unembed_norm = (jnp.linalg.norm(h.astype(jnp.float32), axis=-1)
                  * jnp.sqrt(jnp.maximum(1.0 - 2.0 * p_y + p_sq, 0.0)) / tau)
  return hidden_norm[:n].reshape(lead), unembed_norm[:n].reshape(lead)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused(h, u, y, tau, c, vc):
  """`h [N, D]`, `u [D, V]`, `y [N]` with N a multiple of c -> `(logp [N], entropy [N])`."""
  lse, mean_z, zy = _stats(h, u, y, tau, c, vc)
  return zy - lse, lse - mean_z


def _fused_fwd(h, u, y, tau, c, vc):
  lse, mean_z, zy = _stats(h, u, y, tau, c, vc)
  return (zy - lse, lse - mean_z), (h, u, y, lse, mean_z)


def _fused_bwd(tau, c, vc, res, g):
  h, u, y, lse, mean_z = res
  g_logp, g_ent = g  # [N] each
  n, v = h.shape[0], u.shape[1]
  num_v = -(-v // vc)
  # `dU` block = hᵀ·dz contracts the token axis. Slicing a transposed copy of h gives the matmul
  # a [D, C] left operand in row-major order: XLA:CPU then runs it as a library (YNNPACK) matmul,
  # while a contraction over h's leading axis fell back to a ~1.5× slower generic dot.
  ht = jnp.transpose(h)  # [D, N], one copy

  def vocab_chunk(j, carry):
    dh, du = carry  # [N, D], [D, V] float32

    def token_chunk(i, inner):
      dh, du_c = inner
      _, uc, z, start, fresh = _block(h, u, i, j, tau=tau, c=c, vc=vc)
      sl = lambda x: jax.lax.dynamic_slice_in_dim(x, i * c, c)[:, None]  # [C, 1]
      hit = (start + jnp.arange(vc))[None, :] == sl(y)
      dz = _dlogits(z, hit, sl(lse), sl(mean_z), sl(g_logp), sl(g_ent), tau)  # every column of the block
      dh_c = jnp.dot(jnp.where(fresh, dz, 0.0), uc.T.astype(jnp.float32))  # [C, D]
      dh = jax.lax.dynamic_update_slice_in_dim(
          dh, jax.lax.dynamic_slice_in_dim(dh, i * c, c) + dh_c, i * c, axis=0)
      htc = jax.lax.dynamic_slice_in_dim(ht, i * c, c, axis=1)  # [D, C]
      du_c = du_c + jnp.dot(htc.astype(jnp.float32), dz)  # [D, Vc]
      return dh, du_c

    dh, du_c = jax.lax.fori_loop(0, n // c, token_chunk, (dh, jnp.zeros((u.shape[0], vc), jnp.float32)))
    # Stale (overlapping) columns of the shifted last block get the same, complete values again.
    du = jax.lax.dynamic_update_slice_in_dim(du, du_c, jnp.minimum(j * vc, v - vc), axis=1)
    return dh, du

  dh, du = jax.lax.fori_loop(0, num_v, vocab_chunk,
                             (jnp.zeros(h.shape, jnp.float32), jnp.zeros(u.shape, jnp.float32)))
  return dh.astype(h.dtype), du.astype(u.dtype), None


_fused.defvjp(_fused_fwd, _fused_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _saved(h, u, y, tau):
  """`h [N, D]`, `u [D, V]`, `y [N]` -> `(logp [N], entropy [N])` from whole logits."""
  return _saved_fwd(h, u, y, tau)[0]


def _saved_fwd(h, u, y, tau):
  z = jnp.dot(h, u, preferred_element_type=jnp.float32) / tau  # [N, V]
  m = jnp.max(z, axis=-1)
  e = jnp.exp(z - m[:, None])  # the forward's one pass of exponentials
  s = jnp.sum(e, axis=-1)
  lse = m + jnp.log(s)
  mean_z = jnp.sum(e * z, axis=-1) / s
  zy = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  return (zy - lse, lse - mean_z), (h, u, y, z, lse, mean_z)


def _saved_bwd(tau, res, g):
  h, u, y, z, lse, mean_z = res
  g_logp, g_ent = g
  hit = jnp.arange(u.shape[1])[None, :] == y[:, None]
  dz = _dlogits(z, hit, lse[:, None], mean_z[:, None], g_logp[:, None], g_ent[:, None], tau)  # [N, V]
  dh = jnp.dot(dz, u.T.astype(jnp.float32))
  # A materialised hᵀ (see `_fused_bwd`): the barrier keeps XLA from folding the transpose
  # back into a contraction over h's leading axis, which XLA:CPU runs as a slower generic dot.
  du = jnp.dot(jax.lax.optimization_barrier(jnp.transpose(h)).astype(jnp.float32), dz)
  return dh.astype(h.dtype), du.astype(u.dtype), None


_saved.defvjp(_saved_fwd, _saved_bwd)


def token_distribution_change(hidden_p: jax.Array, unembed_p: jax.Array, hidden_q: jax.Array, unembed_q: jax.Array,
                              targets: jax.Array, *, temperature: float, chunk_size: int = 256
                              ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """How the next-token distribution changed from policy p (e.g. the SFT base) to policy q (a trained run)
  at each position of the same tokens (the change study of `tcred identify --changes`, issue 25).

  With `p_t = softmax(hidden_p_t @ unembed_p / τ)` and `q_t` likewise:
  `logp_t = log p_t[y_t]`, `logq_t = log q_t[y_t]`, `KL_t = KL(p_t ‖ q_t) = Σ_v p_tv (log p_tv − log q_tv)`
  (nats) and `argmax_t = 1[argmax_v p_tv ≠ argmax_v q_tv]` (the most probable next token changed; ties broken
  towards the lower id). Evaluation only (no gradient): the logits of `chunk_size` tokens `[chunk_size, V]` of
  each policy exist at once (the vocabulary is not streamed, unlike `token_logprobs_and_entropy`).

  Args:
    hidden_p, hidden_q: `[..., T, D_p]`, `[..., T, D_q]` final hidden states of the two policies on the same tokens.
    unembed_p, unembed_q: `[D_p, V]`, `[D_q, V]` (the same vocabulary V).
    targets: `[..., T]` the tokens (the sampled ones).
    temperature: τ > 0 of both distributions. chunk_size: tokens per block.

  Returns:
    `(logp, logq, kl, argmax_changed)`, each `[..., T]` float32 (argmax_changed 0/1).
  """
  _check_head_inputs(hidden_p, unembed_p, targets, temperature, chunk_size, 1)
  _check_head_inputs(hidden_q, unembed_q, targets, temperature, chunk_size, 1)
  if unembed_p.shape[1] != unembed_q.shape[1]:
    raise ValueError(f"the two policies have different vocabularies: {unembed_p.shape[1]} and {unembed_q.shape[1]} "
                     "tokens")
  lead = targets.shape
  hp = hidden_p.reshape(-1, hidden_p.shape[-1])
  hq = hidden_q.reshape(-1, hidden_q.shape[-1])
  y = targets.reshape(-1).astype(jnp.int32)
  n = y.shape[0]
  c = max(1, min(chunk_size, n))
  pad = -n % c
  hp, hq, y = jnp.pad(hp, ((0, pad), (0, 0))), jnp.pad(hq, ((0, pad), (0, 0))), jnp.pad(y, (0, pad))

  def block(args):
    a, b, t = args  # [c, D_p], [c, D_q], [c]
    lp = jax.nn.log_softmax(jnp.einsum("cd,dv->cv", a.astype(jnp.float32), unembed_p.astype(jnp.float32))
                            / temperature, axis=-1)  # [c, V]
    lq = jax.nn.log_softmax(jnp.einsum("cd,dv->cv", b.astype(jnp.float32), unembed_q.astype(jnp.float32))
                            / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    pick = lambda l: jnp.take_along_axis(l, t[:, None], axis=-1)[:, 0]
    flip = (jnp.argmax(lp, -1) != jnp.argmax(lq, -1)).astype(jnp.float32)
    return pick(lp), pick(lq), jnp.maximum(kl, 0.0), flip

  blocks = (hp.reshape(-1, c, hp.shape[-1]), hq.reshape(-1, c, hq.shape[-1]), y.reshape(-1, c))
  outs = jax.lax.map(block, blocks)
  return tuple(jax.lax.stop_gradient(o.reshape(-1)[:n].reshape(lead)) for o in outs)
