"""A synthetic credit-explorer record (`tcred.training.record.StepRecord`) of any size, for tests and the
page's performance figure."""

from __future__ import annotations

import numpy as np

from tcred.training.record import DecisiveLabels, StepRecord


def synthetic_record(*, b: int = 3, g: int = 4, t: int = 12, step: int = 5, seed: int = 0,
                     signals: tuple[str, ...] = ("entropy", "surprisal"), min_len: int = 1,
                     decisive_prompts: int = 0) -> StepRecord:
  """B prompts × G rollouts × up to T tokens of random letters with random lengths (in [min_len, T]),
  rewards and values; with `decisive_prompts` > 0, decisive flags on the first that many prompts (random
  advantages in [−1, 1], δ = 0.25, K = 8)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, t + 1, size=(b, g))
  mask = np.arange(t)[None, None, :] < lengths[..., None]
  tokens = np.where(mask, rng.integers(3, 60, size=(b, g, t)), 0).astype(np.int32)
  pieces = [[[chr(ord("a") + int(x) % 26) for x in tokens[i, j, :lengths[i, j]]] for j in range(g)]
            for i in range(b)]
  rewards = rng.integers(0, 2, size=(b, g)).astype(np.float32)
  adv = (rewards - rewards.mean(1, keepdims=True)).astype(np.float32)
  values = lambda scale: np.where(mask, rng.gamma(2.0, scale, size=(b, g, t)), 0.0).astype(np.float32)
  credit = np.where(mask, adv[..., None] * values(0.5), 0.0).astype(np.float32)
  decisive = None
  if decisive_prompts:
    labelled = np.arange(b) < decisive_prompts
    advantage = np.where(mask & labelled[:, None, None], rng.uniform(-1, 1, size=(b, g, t)), 0.0).astype(np.float32)
    decisive = DecisiveLabels(labelled=labelled, advantage=advantage, decisive=np.abs(advantage) >= 0.25,
                              continuations=8, delta=0.25, prefixes=int(mask[labelled].sum()), tokens=1000,
                              seconds=0.5)
  return StepRecord(step=step, name="synthetic-grpo", seed=seed, task="countdown", credit_method="outcome",
                    prompts=[f"prompt {i}: {' '.join(map(str, rng.integers(1, 20, 3)))}" for i in range(b)],
                    texts=[["".join(p) for p in row] for row in pieces], pieces=pieces, tokens=tokens, mask=mask,
                    group_valid=np.ones(b, bool), rewards=rewards, outcome_advantage=adv, credit=credit,
                    weight=mask.astype(np.float32), signals={k: values(1.0) for k in signals}, decisive=decisive)


def token_batch(task, responses: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
  """`[B, G, T]` ids and mask of response texts (EOS appended), T the task's budget."""
  tk = task.tokenizer
  b, g = len(responses), len(responses[0])
  tokens = np.full((b, g, task.max_response_len), tk.pad_id, np.int32)
  mask = np.zeros(tokens.shape, bool)
  for i, group in enumerate(responses):
    for j, text in enumerate(group):
      ids = np.concatenate([tk.encode(text), [tk.eos_id]])
      tokens[i, j, :len(ids)], mask[i, j, :len(ids)] = ids, True
  return tokens, mask


def fake_continuation_means(calls: list):
  """A hand-made policy for `tcred.judges.mc.continuation_means` (monkeypatch it in): the mean of a prefix of
  `at` tokens of problem b is ((7·at + b) mod 5) / 4; each call appends the (problem, prefix bytes) it was asked
  to `calls`."""
  def fake(graphdef, params, task, problems, problem_of, response, length, src_at, *, continuations, **kwargs):
    calls.append([(int(problem_of[r]), response[r, :at].tobytes()) for r, at in src_at])
    return np.array([((7 * at + problem_of[r]) % 5) / 4 for r, at in src_at]), 1000
  return fake
