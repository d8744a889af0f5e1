"""Tree rollouts: M chains per prompt, then rounds of forks from cached prefixes.

Tree-GRPO (arXiv 2509.21240) forks uniformly at step boundaries; TreeRL /
EPTree (arXiv 2506.11902) forks at the top-N tokens of each tree by entropy, or
by the sampled token's −log p (the paper's proxy). A fork at response position
t keeps the source row's tokens `< t` and re-samples token t onwards.

Nothing is recomputed: every row keeps its KV cache and the hidden state that
predicted each of its tokens (`Rows.hidden`), so a fork copies the source row's
cache (invalidating slots that hold positions ≥ t) and draws token t from the
stored hidden state. Each round writes its tokens into its own region of cache
slots, `[P + r·T, P + (r+1)·T)`; attention only looks at valid slots and RoPE
uses explicit positions, so slot order does not matter.

Layout: rows are leaves, `[B, G, T]` like independent chains, G = M·(1 + L·N·C)
(M trees, L rounds, N forks per tree and round, C continuations per fork).
Row g of a prompt: `source[g]` the row it forked from (−1 for the M chains),
`fork_pos[g]` its first own token, `tree_id[g]` its tree. Rows of round r
follow those of earlier rounds, so sources precede their forks.

Host side: `choose_forks` picks fork points between rounds (the task's step
boundaries need the decoded text); `tree_arrays` turns the rows into the node
arrays of `tcred.signals.tree` (segments between fork points), by default
under one root per prompt (`TREE_ROOTS`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.models.decoder import KVCache, positions_from_mask
from tcred.sampling.sampler import Rows, decode, empty_rows, prefill
from tcred.validation import Choice



class ForkRule(Choice):
  """Where a tree forks (`TreeConfig.fork_at`): "step" (uniformly at the task's step boundaries),
  "entropy" / "neg-logp" (at the top tokens by entropy / by −log p of the sampled token)."""

  STEP = "step"
  ENTROPY = "entropy"
  NEG_LOGP = "neg-logp"


FORK_RULES = ForkRule.values()
class TreeRoot(Choice):
  """Where a prompt's M chains hang (`tree_arrays`): "prompt", one root per prompt with the M chains
  under it (DESIGN §4.5; TreeRL's released code, so V(root) is the mean over all the prompt's leaves),
  or "chain", one root per chain (sessions 1–4; a chain never forked then gets TreeRL advantage 0 on
  every token)."""

  PROMPT = "prompt"
  CHAIN = "chain"


TREE_ROOTS = TreeRoot.values()


class TreePool(NamedTuple):
  """Device state of the tree sampler, `B·G` rows (row `b·G + g`).

  Attributes:
    cache: `[B·G, S]` KV cache, S = P + (L + 1)·T.
    slot_pos: `[B·G, S]` int32 response position held by each slot, −1 for
      prompt slots and unused slots.
    rows: decode buffers with hidden states, `[B·G, T]`.
    prompt_len: `[B·G]` int32 real prompt tokens.
    fork_pos: `[B·G]` int32 first own token of each row (0 for chains).
    fed: `[]` int32 tokens fed through the model by the decode loops.
  """

  cache: KVCache
  slot_pos: jax.Array
  rows: Rows
  prompt_len: jax.Array
  fork_pos: jax.Array
  fed: jax.Array


def _region_slot_pos(start: jax.Array, length: jax.Array, t_max: int) -> jax.Array:
  """`[N, T]` positions written in one round's slot region: start + k while < length, else −1."""
  pos = start[:, None] + jnp.arange(t_max)[None, :]
  return jnp.where(pos < length[:, None], pos, -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "group_size", "trees", "rounds", "max_new_tokens", "temperature", "top_p", "eos_id",
    "pad_id"))
def start_trees(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, prompt_valid: jax.Array,
                key: jax.Array, *, group_size: int, trees: int, rounds: int, max_new_tokens: int,
                temperature: float, top_p: float, eos_id: int | tuple[int, ...], pad_id: int) -> TreePool:
  """Prefills B prompts once and samples M = `trees` chains per prompt.

  Args:
    graphdef, params: the policy.
    prompt: `[B, P]` left-padded prompts; prompt_valid: `[B, P]` bool.
    key: PRNG key.
    group_size: G, leaves per prompt (rows of the pool); trees: M ≤ G.
    rounds: L, fork rounds to come (sizes the cache: P + (L + 1)·T slots).
    max_new_tokens: T.

  Returns:
    The pool with rows g < M of every prompt decoded; other rows empty.
  """
  model = nnx.merge(graphdef, params)
  b, p = prompt.shape
  t_max = max_new_tokens
  slots = p + (rounds + 1) * t_max
  cache, last, prompt_len = prefill(model, prompt, prompt_valid, slots)
  rep = lambda x, n: jnp.repeat(x, n, axis=0)
  chains, rows, fed = decode(
      model, cache.repeat(trees), empty_rows(b * trees, t_max, pad_id=pad_id, hidden_dim=last.shape[-1]),
      rep(last, trees), rep(prompt_len, trees), key, slot_base=p, temperature=temperature, top_p=top_p,
      greedy=False, eos_id=eos_id, pad_id=pad_id)
  rows = rows._replace(hidden=rows.hidden.at[:, 0].set(rep(last, trees).astype(jnp.float32)))
  # Scatter the chains into rows b·G + m of the pool.
  dest = (jnp.arange(b)[:, None] * group_size + jnp.arange(trees)[None, :]).reshape(-1)
  n = b * group_size
  pool_rows = empty_rows(n, t_max, pad_id=pad_id, hidden_dim=last.shape[-1])
  pool_rows = jax.tree.map(lambda full, part: full.at[dest].set(part), pool_rows, rows)
  pool_cache = jax.tree.map(lambda full, part: full.at[dest].set(part), cache.repeat(group_size), chains)
  slot_pos = jnp.full((n, slots), -1, jnp.int32)
  chain_pos = _region_slot_pos(jnp.zeros((b * trees,), jnp.int32), rows.length, t_max)
  slot_pos = slot_pos.at[dest, p:p + t_max].set(chain_pos)
  return TreePool(cache=pool_cache, slot_pos=slot_pos, rows=pool_rows, prompt_len=rep(prompt_len, group_size),
                  fork_pos=jnp.zeros((n,), jnp.int32), fed=fed)


@functools.partial(jax.jit, static_argnames=("graphdef", "spare_rows", "pad_id"))
def start_from_responses(graphdef: nnx.GraphDef, params: nnx.State, prompt: jax.Array, prompt_valid: jax.Array,
                         response: jax.Array, length: jax.Array, *, spare_rows: int, pad_id: int) -> TreePool:
  """A pool holding N given responses (teacher forcing), prefilled once, to fork continuations from.

  Each row's prompt and response run through the model in one forward pass;
  the cache keeps them (response in slot region 0) and `rows.hidden` the state
  that predicted each response token, so `fork_round(..., round_index=1)` can
  continue any row from any position `0 ≤ at < length` without feeding a
  prefix token again (Monte-Carlo step values, `tcred.judges.mc`). `spare_rows`
  empty rows follow the N responses as fork destinations; forks write region 1,
  so the pool has S = P + 2·T slots and the destinations can be reused call
  after call.

  Args:
    prompt: `[N, P]` left-padded prompts; prompt_valid: `[N, P]` bool.
    response: `[N, T]` int32 response ids (PAD at and after `length`).
    length: `[N]` int32 real response tokens (EOS included when the response ended).
    spare_rows: empty rows added after the N responses (static); pad_id: their token id.

  Returns:
    The pool, `N + spare_rows` rows; `fed` = the real prompt and response tokens prefilled.
  """
  model = nnx.merge(graphdef, params)
  n, p = prompt.shape
  t_max = response.shape[-1]
  slots = p + 2 * t_max
  resp_valid = jnp.arange(t_max)[None, :] < length[:, None]  # [N, T]
  valid = jnp.concatenate([prompt_valid, resp_valid], axis=1)
  cache = KVCache.empty(model.config, n, slots)
  hidden, cache = model(jnp.concatenate([prompt, response], axis=1), positions_from_mask(valid), valid, cache, 0)
  hidden = hidden.astype(jnp.float32)  # [N, P + T, D]
  # The state predicting response token t: the prompt's last for t = 0, else the state after token t − 1.
  predict = jnp.concatenate([hidden[:, p - 1:p], hidden[:, p:p + t_max - 1]], axis=1)  # [N, T, D]
  rows = Rows(tokens=response.astype(jnp.int32), logp=jnp.zeros((n, t_max), jnp.float32),
              entropy=jnp.zeros((n, t_max), jnp.float32), length=length.astype(jnp.int32),
              hidden=jnp.where(resp_valid[..., None], predict, 0.0))
  slot_pos = jnp.full((n, slots), -1, jnp.int32).at[:, p:p + t_max].set(
      _region_slot_pos(jnp.zeros((n,), jnp.int32), length.astype(jnp.int32), t_max))
  prompt_len = jnp.sum(prompt_valid, axis=-1).astype(jnp.int32)
  spare = empty_rows(spare_rows, t_max, pad_id=pad_id, hidden_dim=hidden.shape[-1])
  cat = lambda a, b: jnp.concatenate([a, b.astype(a.dtype)], axis=0)
  return TreePool(cache=jax.tree.map(cat, cache, KVCache.empty(model.config, spare_rows, slots, cache.k[0].dtype)),
                  slot_pos=cat(slot_pos, jnp.full((spare_rows, slots), -1, jnp.int32)),
                  rows=jax.tree.map(cat, rows, spare), prompt_len=cat(prompt_len, jnp.zeros((spare_rows,), jnp.int32)),
                  fork_pos=jnp.zeros((n + spare_rows,), jnp.int32), fed=jnp.sum(valid, dtype=jnp.int32))


@functools.partial(jax.jit, static_argnames=(
    "graphdef", "round_index", "prompt_slots", "temperature", "top_p", "eos_id", "pad_id"),
    donate_argnums=(2,))
def fork_round(graphdef: nnx.GraphDef, params: nnx.State, pool: TreePool, dest: jax.Array, src: jax.Array,
               at: jax.Array, key: jax.Array, *, round_index: int, prompt_slots: int, temperature: float,
               top_p: float, eos_id: int | tuple[int, ...], pad_id: int) -> TreePool:
  """One round of forks: row `dest[n]` continues row `src[n]` from position `at[n]`.

  The source's cache rows are copied with slots holding positions ≥ at
  invalidated, token `at` is re-sampled from the stored hidden state, and the
  continuation is written into cache slots `[P + r·T, P + (r+1)·T)`.

  Args:
    pool: the sampler state (donated).
    dest, src: `[F]` int32 pool rows (b·G + g); at: `[F]` int32 fork positions,
      `0 ≤ at < length[src]`.
    key: PRNG key.
    round_index: r ≥ 1 (static); prompt_slots: P (static).

  Returns:
    The pool with the F new rows decoded.
  """
  model = nnx.merge(graphdef, params)
  t_max = pool.rows.tokens.shape[-1]
  take = lambda x: jnp.take(x, src, axis=0)
  before = jnp.arange(t_max)[None, :] < at[:, None]  # [F, T]
  src_slot_pos = take(pool.slot_pos)  # [F, S]
  keep = src_slot_pos < at[:, None]  # prompt slots (−1) stay; later positions go
  cache = KVCache(k=tuple(map(take, pool.cache.k)), v=tuple(map(take, pool.cache.v)),
                  valid=take(pool.cache.valid) & keep)
  src_rows = jax.tree.map(take, pool.rows)
  rows = Rows(tokens=jnp.where(before, src_rows.tokens, pad_id), logp=jnp.where(before, src_rows.logp, 0.0),
              entropy=jnp.where(before, src_rows.entropy, 0.0), length=at,
              hidden=jnp.where((jnp.arange(t_max)[None, :] <= at[:, None])[..., None], src_rows.hidden, 0.0))
  first_hidden = jnp.take_along_axis(src_rows.hidden, at[:, None, None], axis=1)[:, 0]  # [F, D]
  slot_base = prompt_slots + round_index * t_max
  cache, rows, fed = decode(model, cache, rows, first_hidden, take(pool.prompt_len), key, slot_base=slot_base,
                            temperature=temperature, top_p=top_p, greedy=False, eos_id=eos_id, pad_id=pad_id)
  slot_pos = jnp.where(keep, src_slot_pos, -1)
  slot_pos = slot_pos.at[:, slot_base:slot_base + t_max].set(_region_slot_pos(at, rows.length, t_max))
  put = lambda full, part: full.at[dest].set(part)
  return TreePool(cache=jax.tree.map(put, pool.cache, cache), slot_pos=put(pool.slot_pos, slot_pos),
                  rows=jax.tree.map(put, pool.rows, rows), prompt_len=pool.prompt_len,
                  fork_pos=put(pool.fork_pos, at), fed=pool.fed + fed)


class ForkPlan(NamedTuple):
  """Where one round forks, per prompt: `[F]` source rows and positions (F = M·N·C)."""

  src: np.ndarray
  at: np.ndarray


def choose_forks(length: np.ndarray, fork_pos: np.ndarray, tree_id: np.ndarray, filled: np.ndarray,
                 *, forks: int, branch: int, trees: int, rng: np.random.Generator,
                 scores: np.ndarray | None = None, eligible: np.ndarray | None = None) -> ForkPlan:
  """Picks N fork points per tree of one prompt (host side), each continued C times.

  Candidates are positions 1 ≤ t < length[g] inside a row's own span
  (t ≥ fork_pos[g]) of the rows filled so far; a fork at t keeps tokens < t.
  - `scores` given (EPTree: entropy or −log p): the N highest-scoring candidates
    (ties broken by row, then position).
  - otherwise (Tree-GRPO): N candidates drawn uniformly without replacement among
    the `eligible` ones (step boundaries); if fewer exist, the rest are drawn
    uniformly from the other candidates.
  A tree with fewer than N candidates repeats picks (with replacement); a tree
  with none forks at t = 0 (a new chain from the prompt).

  Args:
    length, fork_pos, tree_id: `[G]` int rows of one prompt; filled: `[G]` bool
      rows sampled so far.
    forks: N; branch: C; trees: M.
    rng: the host RNG (a pure function of seed and step in the RL loop).
    scores: optional `[G, T]` float, higher forks first.
    eligible: optional `[G, T]` bool (used without scores).

  Returns:
    ForkPlan with F = M·N·C entries, tree by tree, each fork's C copies adjacent.
  """
  src, at = [], []
  for m in range(trees):
    rows = [g for g in np.flatnonzero(filled) if tree_id[g] == m]
    if not rows:
      raise ValueError(f"tree {m} has no sampled rows")
    cand = [(g, t) for g in rows for t in range(max(1, int(fork_pos[g])), int(length[g]))]
    if not cand:
      picks = [(rows[0], 0)] * forks
    elif scores is not None:
      order = sorted(range(len(cand)), key=lambda i: (-float(scores[cand[i]]), i))
      picks = [cand[order[i % len(order)]] for i in range(forks)]
    else:
      good = [c for c in cand if eligible is None or eligible[c]]
      rest = [c for c in cand if not (eligible is None or eligible[c])]
      picks = [good[i] for i in rng.permutation(len(good))[:forks]]
      if len(picks) < forks:
        picks += [rest[i] for i in rng.permutation(len(rest))[:forks - len(picks)]]
      if len(picks) < forks:
        picks += [cand[i] for i in rng.integers(0, len(cand), forks - len(picks))]
    for g, t in picks:
      src += [g] * branch
      at += [t] * branch
  return ForkPlan(np.asarray(src, np.int32), np.asarray(at, np.int32))


class TreeArrays(NamedTuple):
  """The node arrays of one prompt's forest (`tcred.signals.tree` layout), N = 2·G + M.

  The first nodes are the roots (the prompt, no tokens): node 0 alone with
  `root="prompt"`, nodes 0..M−1 (one per chain) with `root="chain"`; every
  other node is a segment of one row between fork points, in topological
  order; unused nodes at the end are padding (valid False).

  Attributes:
    parent: `[N]` int32, −1 for roots and padding.
    is_leaf: `[N]` bool, the last segment of each row.
    valid: `[N]` bool.
    leaf_row: `[N]` int32 row whose rollout ends at the leaf, −1 elsewhere.
    token_node: `[G, T]` int32 node of each row token (copied prefixes map to
      the node that generated them), −1 on padding.
    packed_index: `[G, T]` int32 position of each row token in the packed
      sequence of distinct tokens (rows in order, own tokens only), −1 on padding.
    num_packed: number of distinct tokens (the packed length).
  """

  parent: np.ndarray
  is_leaf: np.ndarray
  valid: np.ndarray
  leaf_row: np.ndarray
  token_node: np.ndarray
  packed_index: np.ndarray
  num_packed: int


def tree_arrays(source: np.ndarray, fork_pos: np.ndarray, length: np.ndarray, tree_id: np.ndarray, *,
                trees: int, max_new_tokens: int, root: str = "prompt") -> TreeArrays:
  """Builds the segment tree of one prompt's rows (host side).

  With `root="prompt"` the M chains are children of one root node (the
  prompt), so tree advantages compare every segment with the mean over all
  the prompt's leaves (TreeRL); `root="chain"` gives each chain its own root.

  Args:
    source: `[G]` int row each row forked from (−1 for chains); sources precede forks.
    fork_pos: `[G]` int first own token (0 for chains); a fork of row s at t needs
      fork_pos[s] ≤ t < length[s].
    length: `[G]` int real tokens per row (≥ fork_pos + 1).
    tree_id: `[G]` int in [0, trees).
    trees: M; max_new_tokens: T.
    root: one of `TREE_ROOTS`.
  """
  root = TreeRoot.parse(root, field="tree root")
  roots = 1 if root is TreeRoot.PROMPT else trees
  g_n = len(source)
  t_n = max_new_tokens
  n_max = 2 * g_n + trees
  parent = np.full(n_max, -1, np.int32)
  is_leaf = np.zeros(n_max, bool)
  valid = np.zeros(n_max, bool)
  leaf_row = np.full(n_max, -1, np.int32)
  token_node = np.full((g_n, t_n), -1, np.int32)
  packed = np.full((g_n, t_n), -1, np.int32)
  valid[:roots] = True
  cuts = [set() for _ in range(g_n)]
  for g in range(g_n):
    s = int(source[g])
    if s >= 0:
      if not (0 <= s < g and fork_pos[s] <= fork_pos[g] < length[s]):
        raise ValueError(f"row {g}: fork of row {s} at {fork_pos[g]} is outside its own tokens "
                         f"[{fork_pos[s]}, {length[s]}) or breaks the row order")
      if fork_pos[g] > fork_pos[s]:
        cuts[s].add(int(fork_pos[g]))
    elif fork_pos[g] != 0:
      raise ValueError(f"row {g}: a chain (source −1) must start at position 0, got {fork_pos[g]}")
  node = roots
  offset = 0
  for g in range(g_n):
    s, start, end = int(source[g]), int(fork_pos[g]), int(length[g])
    if not 0 <= tree_id[g] < trees:
      raise ValueError(f"row {g}: tree_id {tree_id[g]} outside [0, {trees})")
    if end <= start:
      raise ValueError(f"row {g}: length {end} leaves no own token after fork position {start}")
    if s >= 0:
      token_node[g, :start] = token_node[s, :start]
      packed[g, :start] = packed[s, :start]
    if start > 0:
      prev = int(token_node[g, start - 1])
    else:
      prev = 0 if root is TreeRoot.PROMPT else int(tree_id[g])
    bounds = [start] + sorted(c for c in cuts[g] if start < c < end) + [end]
    for a, b in zip(bounds[:-1], bounds[1:]):
      parent[node], valid[node] = prev, True
      token_node[g, a:b] = node
      prev = node
      node += 1
    is_leaf[prev], leaf_row[prev] = True, g
    packed[g, start:end] = offset + np.arange(end - start)
    offset += end - start
  return TreeArrays(parent, is_leaf, valid, leaf_row, token_node, packed, offset)
