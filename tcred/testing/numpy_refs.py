"""Plain-NumPy loop references of the signal functions, for `benchmarks/signals.py`.

Each per-group function has the semantics of the reference of the same name in
`tests/signals/*.py` / `tests/credit/test_advantages.py` (those test modules
set JAX flags on import and are not a package, so the references are restated
here rather than imported). They are written the way one would without JAX:
Python loops over prompts, rollouts, tokens and tree nodes, float64, NumPy
calls where a single call does the job.

The one deliberate difference: `hsic_mi` builds each token's D×D kernel with
NumPy broadcasting instead of the test's element-by-element double loop (which
would take seconds per group at D = 128 and only inflate the speed-up); it
still loops over tokens and inverts each centred kernel explicitly, exactly as
the formula reads.

Shapes: B prompts, G group, T tokens, D width, J answer tokens, N tree nodes,
L leaves, M trees per prompt.
"""

from __future__ import annotations

import math

import numpy as np

# ------------------------------------------------------------------ entropy


def forking_mask(entropy, mask, rho, keep="top"):
  """[..., T] bool: the top-ρ fraction of valid tokens pooled over the whole array."""
  entropy = np.asarray(entropy, np.float64)
  mask = np.asarray(mask, bool)
  valid = sorted((float(h) for h, m in zip(entropy.ravel(), mask.ravel()) if m), reverse=True)
  n = len(valid)
  k = math.ceil(round(rho * n, 9))
  thr = valid[k - 1] if k > 0 else math.inf
  out = np.zeros(entropy.shape, bool)
  for idx in np.ndindex(entropy.shape):
    if mask[idx]:
      out[idx] = entropy[idx] >= thr if keep == "top" else entropy[idx] < thr
  return out


# ------------------------------------------------------------- information


def hsic_factor(x, sigma, eps):
  """R = K̃ (K̃ + eps·D·I)^{-1}, K̃ = K H, for one vector x [D] (float64)."""
  x = np.asarray(x, np.float64)
  d = len(x)
  k = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * sigma**2))
  h = np.eye(d) - np.ones((d, d)) / d
  k_c = k @ h
  return k_c @ np.linalg.inv(k_c + eps * d * np.eye(d))


def hsic_mi(h, h_ans, sigma, eps=1e-5):
  """[T]: MI_t = Σ_ab R_{h_t}[a, b] R_y[b, a], one token at a time."""
  r_y = hsic_factor(h_ans, sigma, eps)
  return np.array([float(np.sum(hsic_factor(x, sigma, eps) * r_y.T)) for x in h])


def hsic_mi_group(h, h_ans, sigma, eps=1e-5):
  """[G, T] for h [G, T, D] and one answer state h_ans [D] (R_y computed once)."""
  r_y = hsic_factor(h_ans, sigma, eps)
  out = np.zeros(h.shape[:2])
  for g in range(h.shape[0]):
    for t in range(h.shape[1]):
      out[g, t] = float(np.sum(hsic_factor(h[g, t], sigma, eps) * r_y.T))
  return out


def mi_peaks(mi, mask, tau=1.5):
  """[T] bool: valid tokens with MI_t > Q3 + τ·IQR (numpy's linear quantiles)."""
  mi = np.asarray(mi, np.float64)
  valid = mi[np.asarray(mask, bool)]
  out = np.zeros(len(mi), bool)
  if len(valid) == 0:
    return out
  q1, q3 = np.quantile(valid, [0.25, 0.75])
  fence = q3 + tau * (q3 - q1)
  for t in range(len(mi)):
    out[t] = bool(mask[t]) and mi[t] > fence
  return out


def answer_information_gain(answer_logp, mask):
  """[G, T]: IG_t = s_{t+1} − s_t, s_k = Σ_j L[k, j], for t < length − 1; else 0."""
  answer_logp = np.asarray(answer_logp, np.float64)
  g, t, _ = answer_logp.shape
  out = np.zeros((g, t))
  for i in range(g):
    length = int(np.sum(mask[i]))
    s = [sum(answer_logp[i, k]) for k in range(t)]
    for k in range(length - 1):
      out[i, k] = s[k + 1] - s[k]
  return out


# ---------------------------------------------------------------- variance


def reference_token_std(ref_logp, mask):
  """[J]: population std over the G rollouts of each valid answer token's log-prob."""
  ref_logp = np.asarray(ref_logp, np.float64)
  g, j = ref_logp.shape
  out = np.zeros(j)
  for jj in range(j):
    if mask[jj]:
      col = [ref_logp[i, jj] for i in range(g)]
      mean = sum(col) / g
      out[jj] = math.sqrt(sum((c - mean) ** 2 for c in col) / g)
  return out


def reference_token_weights(sigma, mask):
  """[J]: σ_j / mean of valid σ (1 on valid tokens when that mean is 0), 0 on padding."""
  valid = [s for s, m in zip(sigma, mask) if m]
  mean = sum(valid) / len(valid) if valid else 0.0
  return np.array([(s / mean if mean > 0 else 1.0) if m else 0.0 for s, m in zip(sigma, mask)])


def dense_reference_reward(ref_logp, weights, mask):
  """[G]: R3_i = Σ_j w_j ℓ_ij / J_valid."""
  n = sum(bool(m) for m in mask)
  out = []
  for row in np.asarray(ref_logp, np.float64):
    total = sum(w * l for w, l, m in zip(weights, row, mask) if m)
    out.append(total / n if n else 0.0)
  return np.array(out)


def query_score(sigma, mask):
  return max([s for s, m in zip(sigma, mask) if m], default=0.0)


def query_keep(scores, rewards, quantile):
  """[B] bool: score not in the lowest `quantile` of the batch and rewards not all equal."""
  b = len(scores)
  m = math.floor(quantile * b + 1e-9)
  thr = sorted(scores)[m] if m < b else math.inf
  return np.array([scores[i] >= thr and len(set(np.asarray(rewards[i]).tolist())) > 1
                   for i in range(b)])


# ---------------------------------------------------------------- advantages


def group_advantages(rewards, mode="grpo", mask=None, eps=1e-6):
  """[G]: (R − mean)/(std + eps) (GRPO) or R − mean (Dr.GRPO) over the valid entries."""
  rewards = np.asarray(rewards, np.float64)
  g = len(rewards)
  mask = np.ones(g, bool) if mask is None else np.asarray(mask, bool)
  valid = [rewards[i] for i in range(g) if mask[i]]
  out = np.zeros(g)
  if not valid:
    return out
  mean = sum(valid) / len(valid)
  std = (sum((r - mean) ** 2 for r in valid) / len(valid)) ** 0.5
  for i in range(g):
    if not mask[i]:
      continue
    c = rewards[i] - mean
    if mode == "dr-grpo":
      out[i] = c
    else:
      out[i] = c / (std + eps) if std > 0 else 0.0
  return out


def process_advantages(scores, score_valid, steps, mask, eps=1e-6):
  """[G, T]: a judge's score changes of valid steps, (d − mean) / (std + eps) over the group (0 when the
  std is 0), on the tokens of each step (`tcred.judges.credit.process_advantages`)."""
  scores = np.asarray(scores, np.float64)
  deltas = {}
  for i in range(scores.shape[0]):
    for k in range(1, scores.shape[1]):
      if score_valid[i][k] and score_valid[i][k - 1]:
        deltas[i, k] = scores[i, k] - scores[i, k - 1]
  values = np.array(list(deltas.values()))
  out = np.zeros(np.shape(mask))
  if values.size == 0:
    return out
  std = values.std()
  norm = {key: ((v - values.mean()) / (std + eps) if std > 0 else 0.0) for key, v in deltas.items()}
  for i in range(out.shape[0]):
    for t in range(out.shape[1]):
      if mask[i][t] and steps[i][t] > 0:
        out[i, t] = norm.get((i, int(steps[i][t])), 0.0)
  return out


def judge_credit(rewards, scores, score_valid, steps, mask, group_valid, lam, eps=1e-6):
  """[B, G, T]: A_i + λ·d̂ per group (GRPO outcome advantage, `process_advantages`), 0 + 0 for filler groups."""
  out = np.zeros(np.shape(mask))
  for b in range(len(rewards)):
    if not group_valid[b]:
      continue
    outcome = group_advantages(rewards[b], eps=eps)
    out[b] = outcome[:, None] + lam * process_advantages(scores[b], score_valid[b], steps[b], mask[b], eps=eps)
  return out


# --------------------------------------------------------------------- trees


def _leaves_under(parent, is_leaf, valid):
  """leaves[s] = the valid leaves whose root path passes through s."""
  n = len(parent)
  leaves = [[] for _ in range(n)]
  for l in range(n):
    if valid[l] and is_leaf[l]:
      s = l
      while s != -1:
        leaves[s].append(l)
        s = int(parent[s])
  return leaves


def _root(parent, s):
  while parent[s] != -1:
    s = int(parent[s])
  return s


def treerl_segment_advantages(parent, is_leaf, leaf_reward, valid):
  """[N]: [(V(s) − V(root)) + (V(s) − V(parent))] / sqrt(|leaves(s)|)."""
  leaves = _leaves_under(parent, is_leaf, valid)
  count = [len(ls) if valid[s] else 0 for s, ls in enumerate(leaves)]
  total = [sum(float(leaf_reward[l]) for l in ls) if valid[s] else 0.0
           for s, ls in enumerate(leaves)]
  v = [t / c if c else 0.0 for t, c in zip(total, count)]
  out = np.zeros(len(parent))
  for s in range(len(parent)):
    if valid[s] and parent[s] != -1 and count[s] > 0:
      root = _root(parent, s)
      out[s] = ((v[s] - v[root]) + (v[s] - v[int(parent[s])])) / math.sqrt(count[s])
  return out


def _group_norm(r, members, eps):
  out = {}
  if not members:
    return out
  vals = [float(r[i]) for i in members]
  mean = sum(vals) / len(vals)
  std = math.sqrt(sum((x - mean) ** 2 for x in vals) / len(vals))
  for i in members:
    out[i] = (float(r[i]) - mean) / (std + eps) if std > 0 else 0.0
  return out


def tree_grpo_leaf_advantages(tree_id, leaf_reward, leaf_valid, num_trees, eps=1e-6):
  """[L]: A_intra + A_inter, group-normalised over the leaf's tree and over the prompt."""
  n = len(tree_id)
  out = np.zeros(n)
  inter = _group_norm(leaf_reward, [i for i in range(n) if leaf_valid[i]], eps)
  for t in range(num_trees):
    intra = _group_norm(leaf_reward, [i for i in range(n) if leaf_valid[i] and tree_id[i] == t], eps)
    for i, a in intra.items():
      out[i] += a
  for i, a in inter.items():
    out[i] += a
  return out


# ------------------------------------------- registered token signals (tcred.signals.registry)
# One reference per registered signal, one group: arrays `[G, T]` (tree arrays `[N]`), float64 loops.


def masked_value(x, mask):
  """[G, T]: x on valid tokens, 0 elsewhere (the entropy and HSIC-MI signals read their input as is)."""
  g, t = np.shape(mask)
  out = np.zeros((g, t))
  for i in range(g):
    for s in range(t):
      if mask[i][s]:
        out[i, s] = float(x[i][s])
  return out


def surprisal(logp, mask):
  """[G, T]: −log p of the sampled token on valid tokens."""
  return -masked_value(logp, mask) + 0.0


def relative_surprisal(logp, entropy, mask):
  """[G, T]: −log p / max(H, 1e-8) on valid tokens (RSI), in float64."""
  ratio = -np.asarray(logp, np.float64) / np.maximum(np.asarray(entropy, np.float64), 1e-8)
  return np.where(np.asarray(mask, bool), ratio, 0.0)


def information_gain_magnitude(info_gain, mask):
  """[G, T]: |IG_t| on valid tokens."""
  return np.abs(masked_value(info_gain, mask))


def running_answer_sigma(info_gain, mask, delta=False):
  """[G, T]: σ_t = population std over rollouts of the running sum of IG (a rollout keeps its last
  value after its end), on valid tokens; `delta`: |σ_t − σ_{t−1}| with σ_{−1} = 0."""
  g, t = np.shape(mask)
  c = np.zeros((g, t))
  for i in range(g):
    run = 0.0
    for s in range(t):
      if mask[i][s]:
        run += float(info_gain[i][s])
      c[i, s] = run
  sigma = [float(np.std(c[:, s])) if any(mask[i][s] for i in range(g)) else 0.0 for s in range(t)]
  out = np.zeros((g, t))
  for i in range(g):
    for s in range(t):
      if mask[i][s]:
        out[i, s] = abs(sigma[s] - (sigma[s - 1] if s else 0.0)) if delta else sigma[s]
  return out


def running_answer_sigma_delta(info_gain, mask):
  return running_answer_sigma(info_gain, mask, delta=True)


def _node_values(parent, is_leaf, valid, leaf_row, rewards):
  leaf_reward = [float(rewards[leaf_row[s]]) if is_leaf[s] else 0.0 for s in range(len(parent))]
  below = _leaves_under(parent, is_leaf, valid)
  value = [sum(leaf_reward[l] for l in ls) / len(ls) if ls else 0.0 for ls in below]
  return leaf_reward, value


def tree_sibling_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """[G, T]: |A(s)| of each token's segment s, A the TreeRL segment advantage; 0 on padding (node −1)."""
  leaf_reward, _ = _node_values(parent, is_leaf, valid, leaf_row, rewards)
  adv = treerl_segment_advantages(parent, is_leaf, leaf_reward, valid)
  g, t = np.shape(token_node)
  out = np.zeros((g, t))
  for i in range(g):
    for s in range(t):
      if token_node[i][s] >= 0:
        out[i, s] = abs(adv[token_node[i][s]])
  return out


def tree_fork_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """[G, T]: |V(s) − V(parent s)| on the first token of each segment s (a root's: 0), 0 elsewhere."""
  _, value = _node_values(parent, is_leaf, valid, leaf_row, rewards)
  g, t = np.shape(token_node)
  out = np.zeros((g, t))
  for i in range(g):
    for s in range(t):
      node = token_node[i][s]
      if node >= 0 and (s == 0 or token_node[i][s - 1] != node) and parent[node] >= 0:
        out[i, s] = abs(value[node] - value[parent[node]])
  return out


def normalised_magnitude(score, mask):
  """[G, T]: |s_t| / mean over the sequence's valid tokens of |s|; all ones if that mean is 0; 0 on padding."""
  g, t = np.shape(mask)
  out = np.zeros((g, t))
  for i in range(g):
    valid = [s for s in range(t) if mask[i][s]]
    mean = sum(abs(float(score[i][s])) for s in valid) / max(len(valid), 1)
    for s in valid:
      out[i, s] = abs(float(score[i][s])) / mean if mean > 0 else 1.0
  return out


def random_scores(key, mask):
  """[G, T]: uniform draws of the key on valid tokens, 0 elsewhere. The draws themselves are the PRNG's
  definition (threefry, `jax.random.uniform`), so this reference takes them from JAX and checks the rest
  (shape, masking, one key per group); their uniformity is tested separately (scipy's KS test)."""
  import jax  # the PRNG's definition (module docstring)
  u = np.asarray(jax.random.uniform(jax.random.wrap_key_data(np.asarray(key, np.uint32)), np.shape(mask)),
                 np.float64)
  return masked_value(u, mask)


def entropy_bound_excess(info_gain, entropy, mask):
  """[G, T]: max(|IG_t| − H_t, 0) on valid tokens (the entropy bound check, arXiv 2604.11056)."""
  g, t = np.shape(mask)
  out = np.zeros((g, t))
  for i in range(g):
    for s in range(t):
      if mask[i][s]:
        out[i, s] = max(abs(float(info_gain[i][s])) - float(entropy[i][s]), 0.0)
  return out


def logp_change(logp, ref_policy_logp, mask):
  """[G, T]: log π(o_t) − log π_ref(o_t) on valid tokens (arXiv 2603.22117)."""
  return masked_value(np.asarray(logp, np.float64) - np.asarray(ref_policy_logp, np.float64), mask)


def token_grad_norms(hidden, unembed, targets, temperature):
  """[N] x 2 for hidden [N, D], unembed [D, V], targets [N]: the norms of ∂ log p_y/∂h and ∂ log p_y/∂U,
  from each token's whole logits and its explicit gradients (one token at a time, float64)."""
  hidden, unembed = np.asarray(hidden, np.float64), np.asarray(unembed, np.float64)
  h_norm, u_norm = np.zeros(len(targets)), np.zeros(len(targets))
  for n, (h, y) in enumerate(zip(hidden, targets)):
    z = h @ unembed / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    dz = -p
    dz[int(y)] += 1.0  # ∂ log p_y / ∂z
    h_norm[n] = np.linalg.norm(unembed @ dz / temperature)
    u_norm[n] = np.linalg.norm(np.outer(h, dz) / temperature)
  return h_norm, u_norm


# Registered signal name -> its reference.
SIGNAL_REFS = {
    "entropy": masked_value, "surprisal": surprisal, "rsi": relative_surprisal, "hsic-mi": masked_value, "info-gain": information_gain_magnitude,
    "xroll-sigma": running_answer_sigma, "xroll-sigma-delta": running_answer_sigma_delta,
    "tree-sibling-gap": tree_sibling_gap, "tree-fork-gap": tree_fork_gap,
    "random": random_scores, "entropy-bound": entropy_bound_excess, "delta-logp": logp_change,
    "gmts-hidden": masked_value, "gmts-unembed": masked_value,
}


# --------------------------------------------------- batched (loop over B / G)


def batch_hsic_mi(h, h_ans, sigma, eps=1e-5):
  """[B, G, T] for h [B, G, T, D], h_ans [B, D]."""
  return np.stack([hsic_mi_group(h[b], h_ans[b], sigma, eps) for b in range(h.shape[0])])


def batch_mi_peaks(mi, mask, tau=1.5):
  """[B, G, T] bool."""
  out = np.zeros(mi.shape, bool)
  for idx in np.ndindex(mi.shape[:-1]):
    out[idx] = mi_peaks(mi[idx], mask[idx], tau)
  return out


def batch_answer_information_gain(answer_logp, mask):
  """[B, G, T] for answer_logp [B, G, T, J]."""
  return np.stack([answer_information_gain(answer_logp[b], mask[b]) for b in range(mask.shape[0])])


def batch_dro_reference(ref_logp, mask):
  """σ [B, J], w [B, J], R3 [B, G] for ref_logp [B, G, J], mask [B, J]."""
  sig, wts, r3 = [], [], []
  for b in range(ref_logp.shape[0]):
    s = reference_token_std(ref_logp[b], mask[b])
    w = reference_token_weights(s, mask[b])
    sig.append(s)
    wts.append(w)
    r3.append(dense_reference_reward(ref_logp[b], w, mask[b]))
  return np.stack(sig), np.stack(wts), np.stack(r3)


def batch_query_keep(sigma, mask, rewards, quantile):
  """[B] bool from σ [B, J], mask [B, J], rewards [B, G]."""
  scores = [query_score(sigma[b], mask[b]) for b in range(sigma.shape[0])]
  return query_keep(scores, rewards, quantile)


def batch_treerl(parent, is_leaf, leaf_reward, valid):
  """[B, N] for B trees."""
  return np.stack([treerl_segment_advantages(parent[b], is_leaf[b], leaf_reward[b], valid[b])
                   for b in range(parent.shape[0])])


def batch_tree_grpo(tree_id, leaf_reward, leaf_valid, num_trees, eps=1e-6):
  """[B, L] for B prompts."""
  return np.stack([tree_grpo_leaf_advantages(tree_id[b], leaf_reward[b], leaf_valid[b], num_trees, eps)
                   for b in range(tree_id.shape[0])])


def batch_group_advantages(rewards, mode="grpo", eps=1e-6):
  """[B, G]."""
  return np.stack([group_advantages(rewards[b], mode, None, eps) for b in range(rewards.shape[0])])
