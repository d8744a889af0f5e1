"""Mutual-information signals (DESIGN §4.3).

(a) HSIC "MI peaks", faithful to Qian et al., "Demystifying Reasoning Dynamics
    with Mutual Information" (arXiv 2506.02867): the normalised HSIC between
    the last-layer hidden state of each generated token and the hidden state of
    the reference solution, and the outlier tokens of that curve.
(b) Answer information gain `answer_information_gain(...)` -> [G, T],
    IG_t = log p(y*|x, o_<=t) − log p(y*|x, o_<t). It needs the model (a
    batched scoring of the reference answer after every prefix), so it is
    written separately and is NOT defined here yet.

Shapes: T tokens, D model width. Functions work on one trajectory; callers
vmap over rollouts and prompts.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from tcred.models.logprobs import token_logprobs_and_entropy
from tcred.signals.registry import TokenSignal, register_signal


def default_sigma(d: int) -> float:
  """Kernel bandwidth for hidden width D: σ = 50 · sqrt(D / 4096).

  The paper uses σ = 50 at D = 4096 and gives no rule for other widths. We
  keep σ² / D fixed (50² / 4096 ≈ 0.61), so σ stays a fixed fraction of the
  norm of a vector whose coordinates have a fixed scale (‖x‖ ∝ sqrt(D)). This
  is our heuristic, not the paper's: it reproduces σ = 50 at D = 4096 and gives
  σ ≈ 8.8 at D = 128. Pass an explicit `sigma` (e.g. the median pairwise
  coordinate distance) when the model's hidden-state scale differs.
  """
  if d <= 0:
    raise ValueError(f"d must be positive, got {d}")
  return 50.0 * math.sqrt(d / 4096.0)


# The sigma rules of `MIInputs`: "width" (tcred's default, `default_sigma`) or "fixed" (σ = PAPER_SIGMA at
# any width, the released MI-Peaks code's `estimate_mi_hsic(..., sigma=50.)`).
MI_SIGMA_RULES = ("width", "fixed")
MI_NORMS = ("post", "pre")
PAPER_SIGMA = 50.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MIInputs:
  """Which hidden states HSIC MI compares, and its kernel bandwidth (hashable: a static argument).

  Attributes:
    layer: the decoder layer whose output is used (negative: from the end); default −1,
      the last. The released MI-Peaks code hooks layer 31 of a 32-layer Llama (the last).
    norm: "post" (tcred's default: after the final RMSNorm, the state the head reads) or
      "pre" (the layer's raw output, what a forward hook on the layer sees: MI-Peaks' code).
    sigma: "width" (tcred's default: σ = 50·sqrt(D/4096), `default_sigma`) or "fixed"
      (σ = 50 at any width, MI-Peaks' code).
  """

  layer: int = -1
  norm: str = "post"
  sigma: str = "width"

  def __post_init__(self):
    if isinstance(self.layer, bool) or not isinstance(self.layer, int):
      raise ValueError(f"mi layer must be an integer (negative: from the end), got {self.layer!r}")
    if self.norm not in MI_NORMS:
      raise ValueError(f"mi norm must be one of {list(MI_NORMS)}, got {self.norm!r}")
    if self.sigma not in MI_SIGMA_RULES:
      raise ValueError(f"mi sigma must be one of {list(MI_SIGMA_RULES)}, got {self.sigma!r}")

  @property
  def is_default(self) -> bool:
    """The final hidden states (last layer, after the final norm): what the head reads."""
    return self.layer == -1 and self.norm == "post"

  def bandwidth(self, d: int) -> float:
    """σ for hidden width D under this rule."""
    return default_sigma(d) if self.sigma == "width" else PAPER_SIGMA

  def describe(self) -> str:
    layer = "last layer" if self.layer == -1 else f"layer {self.layer}"
    norm = "after the final RMSNorm" if self.norm == "post" else "before the final RMSNorm"
    sigma = "σ = 50·sqrt(D/4096)" if self.sigma == "width" else "σ = 50"
    return f"{layer}, {norm}, {sigma}"


def _check_hsic_args(sigma, eps):
  if isinstance(sigma, (int, float)) and not sigma > 0:
    raise ValueError(f"sigma must be positive, got {sigma}")
  if isinstance(eps, (int, float)) and not eps > 0:
    raise ValueError(f"eps must be positive, got {eps}")


def _hsic_factor_t(x, sigma, eps):
  """Rᵀ for one vector x [D] -> [D, D], R = K̃ (K̃ + eps·D·I)^{-1}, K̃ = K H.

  Evaluated through the exact identity (λ = eps·D, E = K − 11ᵀ, M symmetric)

    R = E M H,   M = (H E H + λ I)^{-1},   so   Rᵀ = H M E = M (H E),

  which follows from the push-through identity H (K H + λI)^{-1} =
  (H K H + λI)^{-1} H, from H K H = H E H, and from 1ᵀ M H = 0. In float32 this
  matters: E = expm1(·) keeps the small kernel deviations that K = exp(·)
  rounds away when σ is large, the system is symmetric positive definite, and
  the right-hand side H E carries no component along 1 (the direction where M
  has its largest eigenvalue 1/λ), so nothing cancels catastrophically. One
  LU solve, no explicit inverse.
  """
  return _hsic_factor_from_solution(jnp.linalg.solve(*_hsic_system(x, sigma, eps)))


def _hsic_system(x, sigma, eps):
  """The SPD system of `_hsic_factor_t` for x [D]: (H E H + λI [D, D], H E [D, D])."""
  d = x.shape[0]
  diff = x[:, None] - x[None, :]  # [D, D]
  e = jnp.expm1(-(diff * diff) / (2.0 * sigma * sigma))  # [D, D] = K − 11ᵀ
  he = e - jnp.mean(e, axis=0, keepdims=True)  # [D, D] = H E
  heh = he - jnp.mean(he, axis=1, keepdims=True)  # [D, D] = H E H
  a = heh + (eps * d) * jnp.eye(d, dtype=e.dtype)  # [D, D] SPD
  return a, he


def _hsic_factor_from_solution(y):
  """Rᵀ from y = M H E [..., D, D]: H M H E = M H E exactly."""
  return y - jnp.mean(y, axis=-2, keepdims=True)


def hsic_answer_factor(h_ans, *, sigma, eps: float = 1e-5):
  """The answer-side factor R_y of `hsic_mi`, to cache once per prompt.

  R_y = K̃_y (K̃_y + eps·D·I)^{-1}, K̃_y = K_y H (see `hsic_mi`).

  Args:
    h_ans: [D] hidden state at the last token of the reference solution.
    sigma: Gaussian kernel bandwidth (see `default_sigma`).
    eps: ridge regulariser, scaled by D.

  Returns:
    [D, D] float32 R_y.
  """
  _check_hsic_args(sigma, eps)
  h_ans = jnp.asarray(h_ans, jnp.float32)
  if h_ans.ndim != 1:
    raise ValueError(f"h_ans must be [D], got shape {h_ans.shape}")
  return _hsic_factor_t(h_ans, sigma, eps).T


def _token_mi(x, r_y, sigma, eps):
  """MI of one token, x [D] -> []: Σ_ab R_x[a, b] R_y[b, a] = Σ (R_xᵀ ∘ R_y)."""
  return jnp.sum(_hsic_factor_t(x, sigma, eps) * r_y)


def _mi_chunk(consts, x_chunk):
  """lax.scan body over chunks of tokens, x_chunk [C, D] -> [C].

  Module-level (not a closure) so that eager calls reuse the traced scan.
  """
  r_y, sigma, eps = consts
  return consts, jax.vmap(_token_mi, in_axes=(0, None, None, None))(
      x_chunk, r_y, sigma, eps)


def hsic_mi_from_factor(h, r_y, *, sigma, eps: float = 1e-5, batch_size=None):
  """`hsic_mi` given the cached answer factor R_y = `hsic_answer_factor(h_ans)`.

  Args:
    h: [T, D] last-layer hidden states of the generated tokens.
    r_y: [D, D] answer factor from `hsic_answer_factor` (same sigma and eps).
    sigma: Gaussian kernel bandwidth.
    eps: ridge regulariser, scaled by D.
    batch_size: tokens per step of the sequential loop over T (None: one at a
      time, like `lax.map`). Each step holds a few [D, D] matrices per token.

  Returns:
    [T] float32 MI estimates.
  """
  _check_hsic_args(sigma, eps)
  h = jnp.asarray(h, jnp.float32)
  r_y = jnp.asarray(r_y, jnp.float32)
  if h.ndim != 2 or r_y.shape != (h.shape[1], h.shape[1]):
    raise ValueError(
        f"need h [T, D] and r_y [D, D], got shapes {h.shape} and {r_y.shape}")
  t, d = h.shape
  chunk = 1 if batch_size is None else max(1, min(int(batch_size), t))
  n_chunks = -(-t // chunk)
  # Zero rows pad the last chunk: a constant vector has MI exactly 0.
  h_chunks = jnp.pad(h, ((0, n_chunks * chunk - t), (0, 0))).reshape(n_chunks, chunk, d)
  consts = (r_y, jnp.asarray(sigma, jnp.float32), jnp.asarray(eps, jnp.float32))
  _, mi = jax.lax.scan(_mi_chunk, consts, h_chunks)  # [n_chunks, C]
  return mi.reshape(-1)[:t]


def hsic_mi(h, h_ans, *, sigma, eps: float = 1e-5, batch_size=None):
  """Normalised HSIC between each token's hidden state and the answer's.

  Following arXiv 2506.02867, each D-vector is treated as D scalar samples.
  For a vector x [D]:

    K_ab = exp(−(x_a − x_b)² / (2σ²))          (Gaussian kernel, [D, D])
    K̃ = K H,   H = I − 11ᵀ / D                  (centring)
    R = K̃ (K̃ + eps·D·I)^{-1}
    MI_t ≈ Σ_ab (R_{h_t} ∘ R_yᵀ)_ab = tr(R_{h_t} R_y)

  Cost: one D×D solve with D right-hand sides per token (O(T D³)); for
  repeated calls with the same answer use `hsic_answer_factor` once and
  `hsic_mi_from_factor`.

  Precision: the problem's condition number is about 1/eps, so in float32 the
  result agrees with a float64 evaluation to about 1e-3 relative at eps = 1e-5
  and about 1e-5 at eps = 1e-3 (see `_hsic_factor_t` for the stable form
  used).

  Args:
    h: [T, D] last-layer hidden states h_t of the generated tokens.
    h_ans: [D] last-layer hidden state at the final token of the reference
      solution fed alone.
    sigma: kernel bandwidth (the paper: 50 at D = 4096; see `default_sigma`).
    eps: ridge regulariser (the paper: 1e-5), scaled by D.
    batch_size: tokens per step of the sequential loop over T (None: one at a
      time); larger values trade memory (a few [D, D] per token) for speed.

  Returns:
    [T] float32 MI estimates (padding rows are computed too; mask them later,
    e.g. in `mi_peaks`).
  """
  h = jnp.asarray(h, jnp.float32)
  h_ans = jnp.asarray(h_ans, jnp.float32)
  if h.ndim != 2 or h_ans.shape != h.shape[1:]:
    raise ValueError(f"need h [T, D] and h_ans [D], got {h.shape} and {h_ans.shape}")
  if batch_size is not None and batch_size >= h.shape[0]:
    return _hsic_mi_one_solve(h, h_ans, sigma, eps)
  r_y = hsic_answer_factor(h_ans, sigma=sigma, eps=eps)
  return hsic_mi_from_factor(h, r_y, sigma=sigma, eps=eps, batch_size=batch_size)


def _hsic_mi_one_solve(h, h_ans, sigma, eps):
  """`hsic_mi` with every token in one chunk, as one batched solve [T + 1, D, D].

  The answer's system and the tokens' systems go to LAPACK in a single call on
  purpose. Solved apart, the two solves do not depend on each other, so XLA's
  CPU runtime may run them at once, and jaxlib 0.10's batched LAPACK kernels
  then wait on batch tasks queued on the same intra-op pool that both of them
  occupy: on a 2-core machine that is a deadlock (BUILD_NOTES, "the mi hang").
  The arithmetic is that of `hsic_answer_factor` and `hsic_mi_from_factor`
  (answer with σ and eps as given, tokens with them as float32 scalars, as the
  scan of `hsic_mi_from_factor` sees them), so results are unchanged.
  """
  _check_hsic_args(sigma, eps)
  a_y, he_y = _hsic_system(h_ans, sigma, eps)  # [D, D] each
  sigma_t, eps_t = jnp.asarray(sigma, jnp.float32), jnp.asarray(eps, jnp.float32)
  a_t, he_t = jax.vmap(_hsic_system, in_axes=(0, None, None))(h, sigma_t, eps_t)  # [T, D, D] each
  y = jnp.linalg.solve(jnp.concatenate([a_y[None], a_t]), jnp.concatenate([he_y[None], he_t]))
  f_t = _hsic_factor_from_solution(y)  # [T + 1, D, D]: Rᵀ of the answer, then of each token
  r_y = f_t[0].T
  return jax.vmap(lambda f: jnp.sum(f * r_y))(f_t[1:])  # [T] = Σ (R_xᵀ ∘ R_y), as `_token_mi`


def _masked_quantiles_linear(x, mask, qs):
  """Quantiles of the valid entries of x [T], numpy's default "linear" method.

  With v_0 <= ... <= v_{n−1} the sorted valid values, position p = q (n − 1),
  i = floor(p): Q(q) = v_i + (p − i)(v_{i+1} − v_i) (v_{i+1} = v_i at the end).
  Returns one scalar per q; meaningless (but finite) when n = 0.
  """
  t = x.shape[0]
  ascending = jnp.sort(jnp.where(mask, x, jnp.inf))  # [T]; valid values first
  n = jnp.sum(mask, dtype=jnp.int32)
  last = jnp.maximum(n - 1, 0)
  out = []
  for q in qs:
    pos = q * last.astype(jnp.float32)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, t - 1)
    hi = jnp.clip(jnp.minimum(lo + 1, last), 0, t - 1)
    v_lo = jnp.where(n > 0, ascending[lo], 0.0)
    v_hi = jnp.where(n > 0, ascending[hi], 0.0)
    out.append(v_lo + (pos - lo.astype(jnp.float32)) * (v_hi - v_lo))
  return out


# Which tokens are MI peaks (`mi_peaks`): "outlier", MI_t > Q3 + τ·IQR (tcred's default, the paper's
# text), or "top-k", the k tokens of highest MI per trajectory (the released MI-Peaks code, k = 20).
PEAK_RULES = ("outlier", "top-k")


def mi_peaks(mi, mask, *, tau: float = 1.5, rule: str = "outlier", k: int = 20):
  """MI peaks of one trajectory: valid tokens with MI_t > Q3 + τ·IQR (or the top k by MI).

  arXiv 2506.02867: the tokens where the MI with the answer is an outlier of
  the trajectory's MI curve (Tukey's upper fence). Q1 and Q3 are the 25% and
  75% quantiles of MI over the valid tokens of this trajectory, with linear
  interpolation between order statistics (numpy's default "linear" method),
  IQR = Q3 − Q1.

  Args:
    mi: [T] float MI estimates (e.g. from `hsic_mi`).
    mask: [T] bool, True for valid response tokens.
    tau: fence multiplier (the paper: 1.5).
    rule: one of `PEAK_RULES` (static). "top-k" keeps the min(k, n) valid tokens
      of highest MI (ties by position, earliest first); a 10-token trajectory
      has 10 peaks under top-20 and usually none under the outlier rule.
    k: peaks per trajectory under "top-k" (static, ≥ 1; the MI-Peaks code: 20).

  Returns:
    [T] bool, False on padding; all False when no token is valid (and, under
    "outlier", when fewer than two distinct valid values exist).
  """
  if rule not in PEAK_RULES:
    raise ValueError(f"rule={rule!r} is not one of {list(PEAK_RULES)}")
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be an integer >= 1, got {k!r}")
  mi = jnp.asarray(mi, jnp.float32)
  mask = jnp.asarray(mask, bool)
  if mi.ndim != 1 or mi.shape != mask.shape:
    raise ValueError(f"need mi [T] and mask [T], got {mi.shape} and {mask.shape}")
  if mi.shape[0] == 0:
    return mask
  if rule == "top-k":
    _, idx = jax.lax.top_k(jnp.where(mask, mi, -jnp.inf), min(k, mi.shape[0]))  # ties: lower index first
    return mask & jnp.zeros(mi.shape, bool).at[idx].set(True)
  q1, q3 = _masked_quantiles_linear(mi, mask, (0.25, 0.75))
  fence = q3 + tau * (q3 - q1)
  return mask & (mi > fence)


# --- (b) answer scoring after every prefix: information gain and DRO's reference likelihood ---


def _packed_layout(p: int, t: int, j: int):
  """Static structure of a packed row: prompt [P] | response [T] | T copies of y*[:J-1].

  Copy k (k = 0..T-1) holds y*_0..y*_{J-2} placed after the prefix o_<k. Returns the
  `[L, L]` attention structure, and for every (k, j) the slot whose hidden state
  predicts y*_j after o_<k (`[T, J]`).
  """
  import numpy as np

  c = j - 1
  length = p + t + t * c
  allowed = np.zeros((length, length), bool)
  main = p + t
  allowed[:main, :main] = np.tril(np.ones((main, main), bool))
  predictor = np.zeros((t, j), np.int32)
  for k in range(t):
    start = main + k * c
    rows = slice(start, start + c)
    allowed[rows, :p + k] = True  # the prompt and o_<k
    allowed[rows, start:start + c] = np.tril(np.ones((c, c), bool))
    predictor[k, 0] = p - 1 + k  # y*_0 is predicted by the last token of the prefix
    predictor[k, 1:] = start + np.arange(c)
  return allowed, predictor


def answer_logprobs_after_prefixes(graphdef, params, prompt, prompt_valid, response, mask, answer,
                                   answer_valid, *, temperature: float, chunk_size: int = 1024):
  """`L[g, k, j] = log π(y*_j | x, o^g_<k, y*_<j)` for every prefix length k of every rollout.

  One forward pass per rollout: the prompt, the response, then T copies of the
  answer, copy k attending only to the prompt, `o_<k` and itself (packed answer
  copies with block masks; DESIGN §4.3(b)). The same numbers serve information
  gain (`answer_information_gain`) and DRO's reference-answer likelihood
  (`log π(y*_j | x, c_i, y*_<j)` read at the rollout's answer cue).

  Args:
    graphdef, params: the (sampling) policy, split with `nnx.split`.
    prompt: `[P]` int32 left-padded prompt; prompt_valid: `[P]` bool.
    response: `[G, T]` int32 responses; mask: `[G, T]` bool response mask.
    answer: `[J]` int32 reference answer tokens y* (cue, answer, EOS), right-padded;
      answer_valid: `[J]` bool.
    temperature: the policy's temperature.

  Returns:
    `(logp [G, T, J], hidden [G, T, D])`: the answer log-probs (0 where k ≥ the
    response length or j is padding) and the final hidden state of each
    response token (for HSIC MI).
  """
  from flax import nnx

  g, t = response.shape
  p, j = prompt.shape[0], answer.shape[0]
  if j < 2:
    raise ValueError(f"answer must have at least 2 tokens (cue and EOS), got J={j}")
  allowed, predictor = _packed_layout(p, t, j)
  c = j - 1
  lengths = jnp.sum(mask, axis=-1)  # [G]
  plen = jnp.sum(prompt_valid)
  copy_valid = (jnp.arange(t)[None, :, None] < lengths[:, None, None]) & answer_valid[None, None, :c]  # [G,T,C]
  tokens = jnp.concatenate([jnp.broadcast_to(prompt, (g, p)), response,
                            jnp.broadcast_to(jnp.tile(answer[:c], t), (g, t * c))], axis=-1)
  valid = jnp.concatenate([jnp.broadcast_to(prompt_valid, (g, p)), mask, copy_valid.reshape(g, t * c)], axis=-1)
  prompt_pos = jnp.maximum(jnp.cumsum(prompt_valid) - 1, 0)
  copy_pos = plen + jnp.arange(t)[:, None] + jnp.arange(c)[None, :]  # [T, C]
  positions = jnp.concatenate([prompt_pos, plen + jnp.arange(t), copy_pos.reshape(-1)])
  model = nnx.merge(graphdef, params)
  hidden, _ = model(tokens, jnp.broadcast_to(positions, tokens.shape), valid,
                    attention_mask=jnp.broadcast_to(jnp.asarray(allowed), (g,) + allowed.shape))
  pred_hidden = hidden[:, predictor.reshape(-1)].reshape(g, t, j, -1)  # [G, T, J, D]
  logp, _ = token_logprobs_and_entropy(pred_hidden, model.unembedding(),
                                       jnp.broadcast_to(answer, (g, t, j)), temperature=temperature,
                                       chunk_size=chunk_size)
  ok = (jnp.arange(t)[None, :, None] < lengths[:, None, None]) & answer_valid[None, None, :]
  return jnp.where(ok, logp, 0.0), hidden[:, p:p + t]


def answer_information_gain(answer_logp, mask):
  """Per-token answer information gain of one group.

  `IG_t = log p(y*|x, o_≤t) − log p(y*|x, o_<t)` with `log p(y*|·) = Σ_j L[·, j]`
  (cf. IGPO, arXiv 2510.14967, for the step-level version). Defined for every
  response token before the last one (the EOS, or the budget's end); 0 elsewhere.

  Args:
    answer_logp: `[G, T, J]` from `answer_logprobs_after_prefixes`.
    mask: `[G, T]` response mask.

  Returns:
    `[G, T]` float32.
  """
  s = jnp.sum(answer_logp, axis=-1)  # [G, T]: s[k] = log p(y* | x, o_<k)
  ig = jnp.concatenate([s[:, 1:] - s[:, :-1], jnp.zeros_like(s[:, :1])], axis=-1)
  lengths = jnp.sum(mask, axis=-1, keepdims=True)
  return jnp.where(jnp.arange(s.shape[1])[None, :] < lengths - 1, ig, 0.0)


# ------------------------------------------------------------------ registered token signals


def mi_signal(mi, mask):
  """HSIC MI of each token with the answer, one group (arXiv 2506.02867): `[G, T], [G, T] -> [G, T]`.

    MI_t = HSIC(h_t, h_y*) (normalised), h_t the token's hidden state, h_y* the reference solution's
    final hidden state (`hsic_mi`; the "mi" extra, `MIInputs` says which states). 0 on padding.
  """
  chex.assert_rank([mi, mask], 2)
  chex.assert_equal_shape([mi, mask])
  return jnp.where(mask, jnp.asarray(mi, jnp.float32), 0.0)


def information_gain_magnitude(info_gain, mask):
  """|IG_t| of one group (`answer_information_gain`, DESIGN §4.3(b); cf. IGPO, arXiv 2510.14967): `[G, T]`.

    |IG_t| = |log p(y* | x, o_≤t) − log p(y* | x, o_<t)|

  how much token t moves the likelihood of the reference answer, either way. 0 on padding.
  """
  chex.assert_rank([info_gain, mask], 2)
  chex.assert_equal_shape([info_gain, mask])
  return jnp.where(mask, jnp.abs(jnp.asarray(info_gain, jnp.float32)), 0.0)


register_signal(TokenSignal(name="hsic-mi", description="HSIC MI between h_t and the reference solution's final state",
                            fn=mi_signal, inputs=("mi", "mask")))
register_signal(TokenSignal(name="info-gain", description="|IG_t| = |log p(y*|x,o≤t) − log p(y*|x,o<t)|",
                            fn=information_gain_magnitude, inputs=("info_gain", "mask")))
