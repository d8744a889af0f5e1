"""A synthetic credit-explorer record (`tcred.training.record.StepRecord`) of any size, for tests and the
page's performance figure."""

from __future__ import annotations

import numpy as np

from tcred.training.record import StepRecord


def synthetic_record(*, b: int = 3, g: int = 4, t: int = 12, step: int = 5, seed: int = 0,
                     signals: tuple[str, ...] = ("entropy", "surprisal"), min_len: int = 1) -> StepRecord:
  """B prompts × G rollouts × up to T tokens of random letters with random lengths (in [min_len, T]),
  rewards and values."""
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
  return StepRecord(step=step, name="synthetic-grpo", seed=seed, task="countdown", credit_method="outcome",
                    prompts=[f"prompt {i}: {' '.join(map(str, rng.integers(1, 20, 3)))}" for i in range(b)],
                    texts=[["".join(p) for p in row] for row in pieces], pieces=pieces, tokens=tokens, mask=mask,
                    group_valid=np.ones(b, bool), rewards=rewards, outcome_advantage=adv, credit=credit,
                    weight=mask.astype(np.float32), signals={k: values(1.0) for k in signals})
