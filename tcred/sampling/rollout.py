"""Host side of a rollout: problems -> prompt arrays -> sampled groups -> rewards."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.parallel.distributed import to_host
from tcred.parallel.mesh import Layout
from tcred.sampling.sampler import Rollouts, finish, sample_groups
from tcred.sampling.tree import ForkRule, TreeArrays, choose_forks, fork_round, start_trees, tree_arrays
from tcred.tasks.base import Problem, Task


class Trees(NamedTuple):
  """How the G rows of each prompt were grown as a forest (host arrays).

  Attributes:
    source: `[B, G]` int32 row each row forked from, −1 for the M chains.
    fork_pos: `[B, G]` int32 first token each row generated itself.
    tree_id: `[B, G]` int32 tree of each row.
    arrays: B `TreeArrays` (segment nodes, token → node, packed positions).
    fed: tokens fed through the model while decoding (equals the generated
      tokens: no prefix is recomputed).
  """

  source: np.ndarray
  fork_pos: np.ndarray
  tree_id: np.ndarray
  arrays: list[TreeArrays]
  fed: int


class Groups(NamedTuple):
  """Host copies of a sampled batch with rewards.

  Attributes:
    prompt: `[B, P]` int32; prompt_valid: `[B, P]` bool.
    rollouts: the sampler output (numpy arrays), `[B, G, T]`.
    rewards: `[B, G]` float32.
    texts: B lists of G response strings (without EOS).
    trees: the forest structure for tree rollouts, None for independent chains.
  """

  prompt: np.ndarray
  prompt_valid: np.ndarray
  rollouts: Rollouts
  rewards: np.ndarray
  texts: list[list[str]]
  trees: Trees | None = None

  def generated_tokens(self) -> int:
    """Tokens the sampler generated: every row's tokens, but a forked row's copied prefix only once."""
    mask = np.asarray(self.rollouts.mask)
    if self.trees is None:
      return int(mask.sum())
    return int(sum(a.num_packed for a in self.trees.arrays))


def encode_prompts(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded `[B, P]` prompt ids (the task tokenizer's `prompt_ids`) and validity, P = task.prompt_width."""
  return task.tokenizer.encode_prompts([p.prompt for p in problems], task.prompt_width)


def score(task: Task, problems: Sequence[Problem], rollouts: Rollouts) -> tuple[np.ndarray, list[list[str]]]:
  """Decodes responses and verifies them. A response cut off before EOS gets reward 0."""
  tokens = np.asarray(rollouts.tokens)
  finished = np.asarray(rollouts.finished)
  b, g, _ = tokens.shape
  rewards = np.zeros((b, g), np.float32)
  texts = []
  for i, problem in enumerate(problems):
    row = []
    for j in range(g):
      text = task.tokenizer.decode(tokens[i, j])
      row.append(text)
      if finished[i, j]:
        rewards[i, j] = task.reward(problem, text)
    texts.append(row)
  return rewards, texts


def sample_and_score(graphdef: nnx.GraphDef, params: nnx.State, task: Task, problems: Sequence[Problem],
                     key: jax.Array, *, group_size: int, temperature: float, top_p: float = 1.0,
                     greedy: bool = False, layout: Layout | None = None) -> Groups:
  """`layout`: the run's mesh (None: one device): the prompts are split over it and the sampler keeps
  its KV cache so; the same rollouts either way."""
  prompt, valid = encode_prompts(task, problems)
  placed = (prompt, valid) if layout is None else layout.place_batch((prompt, valid))
  rollouts = sample_groups(graphdef, params, *placed, key, group_size=group_size,
                           max_new_tokens=task.max_response_len, temperature=temperature, top_p=top_p,
                           greedy=greedy, eos_id=task.tokenizer.stop_ids, pad_id=task.tokenizer.pad_id,
                           layout=layout)
  rollouts = to_host(rollouts)  # every process: the global rollouts (tcred.parallel.distributed)
  rewards, texts = score(task, problems, rollouts)
  return Groups(prompt, valid, rollouts, rewards, texts)


def sample_trees_and_score(graphdef: nnx.GraphDef, params: nnx.State, task: Task, problems: Sequence[Problem],
                           key: jax.Array, rng: np.random.Generator, *, tree, temperature: float,
                           top_p: float = 1.0) -> Groups:
  """Tree rollouts (`tcred.sampling.tree`) of each problem, scored; `tree` is a `TreeConfig`.

  Fork points are chosen on the host between rounds: uniformly at the task's
  step boundaries (`tree.fork_at == "step"`) or at the top tokens by entropy /
  −log p. `rng` draws the uniform choices (a pure function of seed and step).
  """
  prompt, valid = encode_prompts(task, problems)
  b, p = prompt.shape
  g, m, t_max = tree.leaves, tree.trees, task.max_response_len
  tk = task.tokenizer
  common = dict(temperature=temperature, top_p=top_p, eos_id=tk.stop_ids, pad_id=tk.pad_id)
  pool = start_trees(graphdef, params, prompt, valid, jax.random.fold_in(key, 0), group_size=g, trees=m,
                     rounds=tree.rounds, max_new_tokens=t_max, **common)
  source = np.full((b, g), -1, np.int32)
  tree_id = np.zeros((b, g), np.int32)
  tree_id[:, :m] = np.arange(m)
  filled = np.zeros((b, g), bool)
  filled[:, :m] = True
  per_round = m * tree.forks * tree.branch
  for r in range(1, tree.rounds + 1):
    rows = to_host(pool.rows._replace(hidden=None))
    length = rows.length.reshape(b, g)
    fork_pos = to_host(pool.fork_pos).reshape(b, g)
    tokens = rows.tokens.reshape(b, g, t_max)
    dest, src, at = [], [], []
    lo = m + (r - 1) * per_round
    for i in range(b):
      scores = eligible = None
      rule = ForkRule.parse(tree.fork_at, field="tree.fork_at")
      if rule is ForkRule.ENTROPY:
        scores = rows.entropy.reshape(b, g, t_max)[i]
      elif rule is ForkRule.NEG_LOGP:
        scores = -rows.logp.reshape(b, g, t_max)[i]
      else:
        eligible = np.zeros((g, t_max), bool)
        for row in np.flatnonzero(filled[i]):
          ids = tokens[i, row, :length[i, row]]
          text = tk.decode(ids)
          ends = [e for e in task.step_ends(text) if 0 < e < len(text)]
          eligible[row, tk.step_positions(ids, ends)] = True  # a step starts at each step end
      plan = choose_forks(length[i], fork_pos[i], tree_id[i], filled[i], forks=tree.forks, branch=tree.branch,
                          trees=m, rng=rng, scores=scores, eligible=eligible)
      rows_i = np.arange(lo, lo + per_round)
      source[i, rows_i], tree_id[i, rows_i] = plan.src, tree_id[i, plan.src]
      filled[i, rows_i] = True
      dest.append(i * g + rows_i)
      src.append(i * g + plan.src)
      at.append(plan.at)
    pool = fork_round(graphdef, params, pool, jnp.asarray(np.concatenate(dest)), jnp.asarray(np.concatenate(src)),
                      jnp.asarray(np.concatenate(at)), jax.random.fold_in(key, r), round_index=r,
                      prompt_slots=p, **common)
  mask, finished = finish(pool.rows, tk.stop_ids)
  shape = (b, g, t_max)
  rows = to_host(pool.rows._replace(hidden=None))
  mask, finished = to_host((mask, finished))
  rollouts = Rollouts(tokens=rows.tokens.reshape(shape), logp=rows.logp.reshape(shape),
                      mask=mask.reshape(shape), finished=finished.reshape(b, g))
  fork_pos = to_host(pool.fork_pos).reshape(b, g)
  length = rows.length.reshape(b, g)
  arrays = [tree_arrays(source[i], fork_pos[i], length[i], tree_id[i], trees=m, max_new_tokens=t_max,
                        root=tree.root)
            for i in range(b)]
  rewards, texts = score(task, problems, rollouts)
  trees = Trees(source=source, fork_pos=fork_pos, tree_id=tree_id, arrays=arrays, fed=int(pool.fed))
  return Groups(prompt, valid, rollouts, rewards, texts, trees)


def _bucket(n: int) -> int:
  """Smallest power of two ≥ n (≥ 4): a few fixed shapes, so few compilations."""
  size = 4
  while size < n:
    size *= 2
  return size


def encode_answers(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """`[B, J]` reference answers y* = cue + answer + EOS, right-padded to a power-of-two J."""
  tk = task.tokenizer
  seqs = [tk.answer_ids(task.answer_cue + p.answer) for p in problems]
  j = _bucket(max(len(s) for s in seqs))
  out = np.full((len(seqs), j), tk.pad_id, np.int32)
  valid = np.zeros((len(seqs), j), bool)
  for i, s in enumerate(seqs):
    out[i, :len(s)] = s
    valid[i, :len(s)] = True
  return out, valid


def encode_solutions(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """`[B, S]` BOS + reference solution, left-padded (the last column is its final token)."""
  return task.tokenizer.encode_bos_texts([p.solution for p in problems], task.max_response_len + 1)
