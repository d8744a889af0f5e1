"""Host side of a rollout: problems -> prompt arrays -> sampled groups -> rewards."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np
from flax import nnx

from tcred.sampling.sampler import Rollouts, sample_groups
from tcred.tasks import tokenizer as tok
from tcred.tasks.base import Problem, Task


class Groups(NamedTuple):
  """Host copies of a sampled batch with rewards.

  Attributes:
    prompt: `[B, P]` int32; prompt_valid: `[B, P]` bool.
    rollouts: the sampler output (numpy arrays), `[B, G, T]`.
    rewards: `[B, G]` float32.
    texts: B lists of G response strings (without EOS).
  """

  prompt: np.ndarray
  prompt_valid: np.ndarray
  rollouts: Rollouts
  rewards: np.ndarray
  texts: list[list[str]]


def encode_prompts(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded `[B, P]` prompt ids (BOS first) and validity, P = task.max_prompt_len + 1."""
  return tok.encode_batch_left_padded([p.prompt for p in problems], task.max_prompt_len + 1, bos=True)


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
      text = tok.decode(tokens[i, j])
      row.append(text)
      if finished[i, j]:
        rewards[i, j] = task.reward(problem, text)
    texts.append(row)
  return rewards, texts


def sample_and_score(graphdef: nnx.GraphDef, params: nnx.State, task: Task, problems: Sequence[Problem],
                     key: jax.Array, *, group_size: int, temperature: float, top_p: float = 1.0,
                     greedy: bool = False) -> Groups:
  prompt, valid = encode_prompts(task, problems)
  rollouts = sample_groups(graphdef, params, prompt, valid, key, group_size=group_size,
                           max_new_tokens=task.max_response_len, temperature=temperature, top_p=top_p,
                           greedy=greedy, eos_id=tok.EOS_ID, pad_id=tok.PAD_ID)
  rollouts = jax.tree.map(np.asarray, rollouts)
  rewards, texts = score(task, problems, rollouts)
  return Groups(prompt, valid, rollouts, rewards, texts)


def _bucket(n: int) -> int:
  """Smallest power of two ≥ n (≥ 4): a few fixed shapes, so few compilations."""
  size = 4
  while size < n:
    size *= 2
  return size


def encode_answers(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """`[B, J]` reference answers y* = cue + answer + EOS, right-padded to a power-of-two J."""
  seqs = [np.concatenate([tok.encode(task.answer_cue + p.answer), [tok.EOS_ID]]) for p in problems]
  j = _bucket(max(len(s) for s in seqs))
  out = np.full((len(seqs), j), tok.PAD_ID, np.int32)
  for i, s in enumerate(seqs):
    out[i, :len(s)] = s
  return out, out != tok.PAD_ID


def encode_solutions(task: Task, problems: Sequence[Problem]) -> tuple[np.ndarray, np.ndarray]:
  """`[B, S]` BOS + reference solution, left-padded (the last column is its final token)."""
  return tok.encode_batch_left_padded([p.solution for p in problems], task.max_response_len + 1, bos=True)
