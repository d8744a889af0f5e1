"""Judge credit: the outcome advantage plus λ times a step judge's process advantage (DESIGN §4.6).

After sampling, a registered step judge (`tcred.judges`) scores each rollout's
steps on the host (`JudgeCredit.host_extras`): s_{i,0} … s_{i,K_i}. Inside the
train step, with A_i the outcome advantage (GRPO's by default) and d̂_{i,k} the
score change s_{i,k} − s_{i,k−1} normalised over the group's valid steps
(`tcred.judges.credit.process_advantages`), token t of step k(t) gets

  A_{i,t} = A_i + λ · d̂_{i,k(t)}

(`judge_token_advantages`, vmapped over the B prompts). λ = 0 is the outcome
method exactly. Steps are the task's (`Task.step_ends`, character offsets),
mapped to the policy's tokens by the task tokenizer (`step_token_ends`); tokens
after the last step end (EOS) belong to the last step.

Extras (host arrays, `[B, G, ·]`): judge_scores `[B, G, T + 1]` float32,
judge_valid `[B, G, T + 1]` bool (T + 1 bounds the steps of a T-token response
for a character tokenizer; a judge giving more raises), judge_steps `[B, G, T]`
int32 (0 on padding). The judge's cost per step is logged as
`counts/judge_tokens`, `time/judge_s` (summary: `judge_tokens`, `judge_wall_s`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import AdvantageMode, GroupNorm
from tcred.credit.base import Credit, CreditInputs, CreditMethod, HostExtras, register_credit
from tcred.credit.outcome import outcome_advantages, valid_tokens
from tcred.judges.base import Judge, JudgeContext, JudgeScores, make_judge, parse_judge_settings
from tcred.judges.credit import judge_token_advantages, process_advantages, token_steps
from tcred.sampling.rollout import Groups
from tcred.tasks.base import Problem, Task

JUDGE_EXTRAS = ("judge_scores", "judge_valid", "judge_steps")

_PREPARED: dict[tuple, Judge] = {}  # (judge, task, task config, policy config) -> the judge `prepare` returned


def prepared_judge(judge: Judge, task: Task, ctx: JudgeContext) -> Judge:
  """`judge.prepare(task, ctx)` once per judge, task config and policy architecture (trained judges load or
  train there, from `ctx.base_params` when given: the run's base policy, also after a resume)."""
  key = (judge, task.name, repr(ctx.task_config), repr(ctx.model_config))
  if key not in _PREPARED:
    _PREPARED[key] = judge.prepare(task, ctx if ctx.base_params is None else ctx._replace(params=ctx.base_params))
  return _PREPARED[key]


def judge_arrays(task: Task, tokens: np.ndarray, mask: np.ndarray, texts: Sequence[Sequence[str]], scores: np.ndarray,
                 valid: np.ndarray) -> dict[str, np.ndarray]:
  """The extras of `[B, G, T]` rollouts (tokens, mask with EOS, texts) from their judge scores `[B, G, W]`
  (see the module docstring)."""
  b, g, t = tokens.shape
  if scores.shape[-1] > t + 1:
    raise ValueError(f"the judge gave {scores.shape[-1] - 1} steps for a {t}-token response budget")
  out_scores = np.zeros((b, g, t + 1), np.float32)
  out_valid = np.zeros((b, g, t + 1), bool)
  out_scores[..., :scores.shape[-1]] = scores
  out_valid[..., :valid.shape[-1]] = valid
  steps = np.zeros((b, g, t), np.int32)
  tk = task.tokenizer
  for i in range(b):
    for j in range(g):
      ids = tokens[i, j][mask[i, j]]
      body = ids[:-1] if len(ids) and np.isin(ids[-1], tk.eos_ids) else ids
      ends = tk.step_token_ends(body, task.step_ends(texts[i][j]))
      if int(out_valid[i, j].sum()) != len(ends) + 1:
        raise ValueError(f"the judge scored {int(out_valid[i, j].sum()) - 1} steps of a response with "
                         f"{len(ends)} steps")
      steps[i, j] = token_steps([int(e) for e in ends], len(ids), t)
  return {"judge_scores": out_scores, "judge_valid": out_valid, "judge_steps": steps}


def score_rollouts(judge: Judge, task: Task, problems: Sequence[Problem], tokens: np.ndarray, mask: np.ndarray,
                   texts: Sequence[Sequence[str]], rewards: np.ndarray,
                   ctx: JudgeContext) -> tuple[dict[str, np.ndarray], JudgeScores]:
  """Scores `[B, G, T]` rollouts (their own token ids and rewards go to the judge in `ctx`); returns the
  judge extras (`judge_arrays`) and the judge's `JudgeScores` (its cost)."""
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  ids = [[tokens[i, j][mask[i, j]] for j in range(tokens.shape[1])] for i in range(tokens.shape[0])]
  out = judge.score_groups(task, problems, texts, ctx._replace(rewards=np.asarray(rewards), response_ids=ids))
  return judge_arrays(task, tokens, mask, texts, out.scores, out.valid), out


def judge_host_extras(judge: Judge, task: Task, problems: Sequence[Problem], groups: Groups,
                      ctx: JudgeContext) -> HostExtras:
  """The step scores of a chunk's rollouts by `judge` (prepared for the task and `ctx`'s policy) as host extras,
  with the judge's tokens and seconds: what every judge-backed credit method computes before its step."""
  r = groups.rollouts
  arrays, out = score_rollouts(prepared_judge(judge, task, ctx), task, problems, r.tokens, r.mask, groups.texts,
                               groups.rewards, ctx)
  return HostExtras(arrays, tokens=out.tokens, seconds=out.seconds)


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class JudgeCredit(GroupNorm, CreditMethod):
  """`A_{i,t} = A_i + λ · d̂_{i,k(t)}` from a registered step judge (see the module docstring).

  Attributes:
    judge: a registered judge name (`tcred.judges.judge_names()`).
    judge_settings: the judge's settings as ``"key=value,key=value"`` (e.g. ``"continuations=4"`` for
      `mc`), checked against the judge's fields; "" keeps its defaults.
    lam: λ ≥ 0, the weight of the process advantage (0: the outcome method exactly).
    mode: the outcome advantage convention (`AdvantageMode`: GRPO's by default).
    std_ddof, eps, lone: the group normaliser's conventions (`GroupNorm`), for both advantages; with
      lone="zero" a group of one rollout gets no process advantage either (nothing to compare it with),
      with lone="reward" its steps are normalised among themselves.
  """

  name = "judge"
  description = "outcome advantage + λ × a step judge's group-normalised score change on the step's tokens"
  host_cost = "judge"
  judge: str = "oracle"
  judge_settings: str = ""
  lam: float = 1.0
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    AdvantageMode.parse(self.mode, field="credit.mode")
    if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam >= 0:
      raise ValueError(f"credit.lam must be a number >= 0 (0: the outcome method), got {self.lam!r}")
    try:
      self.make_judge()
    except (ValueError, TypeError) as e:
      raise ValueError(f"credit.judge={self.judge!r}, credit.judge_settings={self.judge_settings!r}: {e}") from None

  def make_judge(self) -> Judge:
    """The configured judge (not yet prepared)."""
    return make_judge(self.judge, **parse_judge_settings(self.judge, self.judge_settings))

  def host_extras(self, task: Task, problems: Sequence[Problem], groups: Groups, ctx: JudgeContext) -> HostExtras:
    """Scores the chunk's rollouts with the judge (the current policy, rewards and token ids in `ctx`)."""
    return judge_host_extras(self.make_judge(), task, problems, groups, ctx)

  def __call__(self, inputs: CreditInputs) -> Credit:
    ex = inputs.extras
    outcome = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())  # [B, G]
    process = jax.vmap(functools.partial(process_advantages, eps=self.eps, ddof=self.std_ddof))(
        ex["judge_scores"], ex["judge_valid"], ex["judge_steps"], inputs.mask)  # [B, G, T]
    process = jnp.where(inputs.group_valid[:, None, None], process, 0.0)
    if inputs.mask.shape[1] == 1 and self.lone == "zero":
      process = jnp.zeros_like(process)  # a lone rollout: no credit at all, as its outcome advantage
    advantages = jax.vmap(functools.partial(judge_token_advantages, lam=self.lam))(outcome, process)
    weights = valid_tokens(inputs)
    n = jnp.maximum(jnp.sum(weights), 1)
    return Credit(advantages=advantages, weights=weights.astype(jnp.float32),
                  metrics={"process_abs": jnp.sum(jnp.where(weights, jnp.abs(process), 0.0)) / n})
