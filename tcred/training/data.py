"""Problem streams: seeded per step, disjoint from the held-out evaluation set by problem key.

Held out by problem (DESIGN §5): the held-out set holds each `Task.problem_key` once, and every training
stream (SFT demonstrations, RL prompts, a judge's data) refuses a problem whose key is held out, not only
one whose prompt text is: countdown's ``"5 3 7>22:"`` is the held-out ``"3 5 7>22:"`` reordered.
"""

from __future__ import annotations

import numpy as np

from tcred.tasks.base import Problem, Task

EVAL_NAMESPACE = 0x7E57  # Seed namespace of held-out problems (shared by every run and seed).
SFT_NAMESPACE = 0x5F7
RL_NAMESPACE = 0x21
HOST_NAMESPACE = 0x4057  # Folded into a chunk's sampling key for its credit method's host extras (a judge's sampling).


EVAL_PATIENCE = 20_000  # draws without a new prompt after which a task counts as out of prompts
_CHAO_EVERY = 10_000  # draws between estimates of how many distinct prompts the task has


def eval_problems(task: Task, n: int) -> list[Problem]:
  """The first `n` held-out problems (distinct problem keys), the same for every run of the task config.

  The list for `n` is a prefix of the list for any larger count. Raises ValueError when the task
  cannot produce `n` distinct problems, naming how many it produced. The refusal is fast: every
  `_CHAO_EVERY` draws, the Chao1 estimate of the number of distinct problems (seen + f1²/(2·f2),
  f_k the keys seen k times; Chao 1984) is compared with `n`, and a count more than twice the
  estimate is refused; otherwise after `EVAL_PATIENCE` draws without a new problem, or 50·n draws.
  A count the task can produce draws exactly the same problems whatever these checks.

  A task with its own fixed split (`Task.held_out_problems`, a question file) gives its own list
  (distinct by key too).
  """
  own = task.held_out_problems(n)
  if own is not None:
    return own
  rng = np.random.default_rng([EVAL_NAMESPACE])
  out, seen, since_new = [], {}, 0
  for draw in range(1, 50 * n + 1):
    p = task.sample(rng)
    key = task.problem_key(p)
    if key not in seen:
      seen[key] = 1
      out.append(p)
      since_new = 0
      if len(out) == n:
        return out
    else:
      seen[key] += 1
      since_new += 1
      if since_new >= EVAL_PATIENCE:
        break
    if draw % _CHAO_EVERY == 0:
      counts = np.bincount(np.fromiter(seen.values(), np.int64, len(seen)))
      f1, f2 = (int(counts[k]) if len(counts) > k else 0 for k in (1, 2))
      estimate = len(seen) + f1 * (f1 - 1) / (2 * (f2 + 1))  # bias-corrected Chao1
      if n > 2 * estimate:
        raise ValueError(f"task {task.name} cannot produce {n} distinct held-out problems (about "
                         f"{estimate:.0f} exist by the Chao1 estimate after {draw} draws, {len(out)} seen)")
  raise ValueError(f"task {task.name} could not produce {n} distinct held-out problems (it produced {len(out)})")


def held_out_keys(task: Task, n: int) -> frozenset[str]:
  """The problem keys of the first `n` held-out problems (`eval_problems`), what training streams exclude."""
  return frozenset(task.problem_key(p) for p in eval_problems(task, n))


def training_problems(task: Task, n: int, *, namespace: int, seed: int, step: int,
                      exclude_keys: frozenset[str], offset: int = 0) -> list[Problem]:
  """`n` problems for one step, a pure function of (namespace, seed, step, offset), never one whose
  problem key (`Task.problem_key`) is in `exclude_keys` (the held-out keys, `held_out_keys`)."""
  rng = np.random.default_rng([namespace, seed, step, offset])
  out = []
  for _ in range(200 * n):
    p = task.sample(rng)
    if task.problem_key(p) not in exclude_keys:
      out.append(p)
      if len(out) == n:
        return out
  raise ValueError(f"task {task.name}: too few training problems outside the held-out set")


def encode_demonstrations(task: Task, problems: list[Problem], demos: list[str]):
  """SFT batch: `[N, L]` left-padded prompt ids (BOS + prompt) + demonstration + EOS, validity, loss mask
  (on the demonstration and EOS), all in the task's tokenizer.

  L = task.prompt_width + max_response_len (the response budget includes EOS).
  """
  tk = task.tokenizer
  length = task.prompt_width + task.max_response_len
  tokens = np.full((len(problems), length), tk.pad_id, np.int32)
  valid = np.zeros((len(problems), length), bool)
  loss_mask = np.zeros((len(problems), length), bool)
  for i, (p, d) in enumerate(zip(problems, demos)):
    demo = tk.answer_ids(d)
    ids = np.concatenate([tk.prompt_ids(p.prompt), demo])
    if len(ids) > length:
      raise ValueError(f"demonstration too long for the task's budget ({len(ids)} > {length}): {d!r}")
    tokens[i, length - len(ids):] = ids
    valid[i, length - len(ids):] = True
    loss_mask[i, length - len(demo):] = True
  return tokens, valid, loss_mask
