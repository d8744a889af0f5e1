"""The generative step judge: a small language model that analyses a step, then gives a verdict (DESIGN §4.6).

StepWiser (arXiv 2508.19229) at toy scale, "reasoning before scoring" (GenPRM
2504.00891, ThinkPRM 2504.16828): for step k of a rollout the judge reads the
problem and the steps 1..k (step k in brackets; `tcred.tasks.step_judge`),
writes a short analysis, the cue ``@`` and a verdict, ``+`` (good) or ``-``
(bad). It is a `Decoder` with its own weights over the character tokenizer,
whose vocabulary already holds the verdict characters. Training (in
`tcred.training.generative_judge`, above this layer; reached through the
trainer registry of `tcred.judges.trained`): SFT on the task's teacher
analyses followed by the label's verdict, then GRPO with reward 1 when the
verdict matches the label, classes balanced by sampling.

Scores (`LoadedGenerativeJudge.score_groups`, batched over every step of every
rollout):
  * `samples` = 1: the analysis is decoded greedily up to the cue and
    s_k = p(+) / (p(+) + p(−)), the verdict token's probability at the cue
    renormalised over the two verdicts (one forward pass over both endings);
  * `samples` = S > 1: S analyses and verdicts are sampled at temperature 1 and
    s_k is the fraction of ``+`` among those that give a verdict.
  A response without a verdict (the budget ran out) scores 0.5 (undecided).
  s_0 (the prompt alone, no step to judge) is the fraction of training rollouts
  whose first step is labelled good: the judge's prior that a step is good
  before it sees one. Judge credit reads only changes s_k − s_{k−1}.

Shapes: B problems, G responses each, K steps (padded), N judged steps, P judge
prompt tokens, T judge response tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcred.judges.base import Judge, JudgeScores, pad_scores, register_judge
from tcred.judges.trained import LabelledRollouts, TrainedJudge, _check_int
from tcred.models.config import ModelConfig, model_preset
from tcred.models.forward import response_logprobs
from tcred.sampling.sampler import sample_groups
from tcred.tasks import step_judge
from tcred.tasks.base import Problem, Task
from tcred.tasks.text import CHAR, CharTokenizer
from tcred.validation import Choice

_CHUNK = 256  # judged steps per sampler call
_BUCKET = 16  # judge prompts are padded to a multiple of this width (few compiled shapes)


class JudgeSize(Choice):
  """The judge's decoder: a model preset, or the policy's own architecture."""

  TINY = "tiny"  # 2 layers, width 32 (tests)
  SMALL = "char-small"  # 3 layers, width 128: the embedded tasks' policy size
  POLICY = "policy"  # the policy's ModelConfig (`JudgeContext.model_config`)


def _check_positive(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
    raise ValueError(f"judge.{name} must be a positive number, got {value!r}")


@register_judge
@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerativeJudge(TrainedJudge):
  """The generative judge's settings (its data settings are `TrainedJudge`'s: labels, rule, ...).

  Attributes:
    sft_steps: SFT steps on the teacher analyses (>= 1).
    sft_batch_size, sft_lr: SFT batch (examples) and AdamW learning rate.
    grpo_steps: GRPO steps with the verdict-correctness reward (>= 0; 0: the SFT judge).
    grpo_prompts, grpo_group: judged steps per GRPO step and analyses sampled for each.
    grpo_lr: GRPO's AdamW learning rate.
    size: the judge's decoder (`JudgeSize`: tiny, char-small, policy).
    samples: 1: greedy analysis and the verdict's probability; S > 1: fraction of ``+`` over S samples.
    verdicts: the verdict trained on: "label" (the Monte-Carlo label, the issue's recipe) or "teacher"
      (the teacher's own conclusion, the task's exact oracle: a study option).
  """

  name = "generative"
  description = ("a small LM that writes an analysis of the step then a verdict (+/-); SFT on teacher analyses, "
                 "GRPO on verdict correctness against Monte-Carlo labels (StepWiser)")

  sft_steps: int = 400
  sft_batch_size: int = 32
  sft_lr: float = 1e-3
  grpo_steps: int = 100
  grpo_prompts: int = 16
  grpo_group: int = 8
  grpo_lr: float = 2e-5
  size: str = "char-small"
  samples: int = 1
  verdicts: str = "label"

  def __post_init__(self):
    super().__post_init__()
    _check_int("sft_steps", self.sft_steps, 1)
    _check_int("sft_batch_size", self.sft_batch_size, 1)
    _check_int("grpo_steps", self.grpo_steps, 0)
    _check_int("grpo_prompts", self.grpo_prompts, 1)
    _check_int("grpo_group", self.grpo_group, 2)
    _check_int("samples", self.samples, 1)
    _check_positive("sft_lr", self.sft_lr)
    _check_positive("grpo_lr", self.grpo_lr)
    JudgeSize.parse(self.size, field="judge.size")
    step_judge.Verdicts.parse(self.verdicts, field="judge.verdicts")

  def prepare(self, task: Task, ctx) -> Judge:
    self.check_task(task)
    return super().prepare(task, ctx)

  def check_task(self, task: Task) -> None:
    """The judge's SFT needs the task's teacher analyses (the embedded tasks)."""
    super().check_task(task)
    if type(task).teacher_analysis is Task.teacher_analysis:
      raise ValueError(f"judge {self.name!r} starts by SFT on teacher analyses; task {task.name!r} has none "
                       "(allowed: tasks with a teacher, e.g. countdown, graph-path, long-addition)")

  def model_config(self, policy: ModelConfig | None, width: int) -> ModelConfig:
    """The judge's decoder for sequences of up to `width` tokens (prompt + response)."""
    size = JudgeSize.parse(self.size, field="judge.size")
    if size is JudgeSize.POLICY:
      if policy is None:
        raise ValueError("judge.size=policy needs the policy's model config (JudgeContext.model_config)")
      config = policy
    else:
      config = model_preset(size.value)
    config = config.replace(vocab_size=max(config.vocab_size, CHAR.vocab_size))
    if width > config.max_position_embeddings:
      config = config.replace(max_position_embeddings=width)
    return config


def examples_from_rollouts(task: Task, data: LabelledRollouts) -> list[step_judge.JudgeExample]:
  """The judge examples of every labelled step of `data` (its `label_valid` steps, in order).

  A rollout whose response holds an id outside the character vocabulary (decoded as U+FFFD: the policy
  sampled an unused id, rare) is left out: its text has no ids to re-encode, so it cannot be a training
  prompt (scoring builds prompts from the ids instead, `step_judge.judge_prompt_ids`)."""
  out = []
  for n, (problem, response) in enumerate(zip(data.problems, data.responses)):
    k = int(np.sum(data.label_valid[n]))
    if not np.all(data.label_valid[n, :k]):
      raise ValueError(f"rollout {n}: labelled steps must be its first ones, got {data.label_valid[n].tolist()}")
    if "\ufffd" in response:
      continue
    out.extend(step_judge.step_examples(task, problem, response, data.labels[n, :k]))
  return out


def teacher_labelled(task: Task, problems: Sequence[Problem], responses: Sequence[str]) -> LabelledRollouts:
  """Rollouts labelled by the task's teacher (its exact oracle of a complete step) instead of Monte-Carlo values:
  for tests and oracle-label studies. q holds Q_0 = 1 and the labels as 0/1 values."""
  labels = [[task.teacher_analysis(p, r[:s], r[s:e]).good for s, e in step_judge.step_spans(task, r)]
            for p, r in zip(problems, responses)]
  width = max((len(x) for x in labels), default=0)
  out = np.zeros((len(labels), width), bool)
  valid = np.zeros((len(labels), width), bool)
  q = np.full((len(labels), width + 1), np.nan)
  for n, row in enumerate(labels):
    out[n, :len(row)], valid[n, :len(row)] = row, True
    q[n, 0], q[n, 1:len(row) + 1] = 1.0, row
  ids = [np.concatenate([task.tokenizer.encode(r), [task.tokenizer.eos_id]]).astype(np.int32) for r in responses]
  return LabelledRollouts(list(problems), list(responses), ids, q, out, valid, tokens=0, seconds=0.0)


def first_step_prior(data: LabelledRollouts) -> float:
  """s_0: the fraction of rollouts whose first step is labelled good (0.5 without labelled rollouts)."""
  first = data.label_valid[:, 0] if data.label_valid.size else np.zeros(0, bool)
  return float(np.mean(data.labels[first, 0])) if first.any() else 0.5


def _bucket(n: int, size: int) -> int:
  return max(size, -(-n // size) * size)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _ending_logp(graphdef, params, prompt, prompt_valid, response, mask):
  logp, _ = response_logprobs(graphdef, params, prompt, prompt_valid, response, mask, temperature=1.0,
                              chunk_size=1024)
  return logp


def judge_steps(graphdef, params, prompts: Sequence[str | np.ndarray], key: jax.Array, *, max_new_tokens: int,
                samples: int) -> tuple[np.ndarray, list[str], int]:
  """Runs the judge on N prompts: `(scores [N] in [0, 1], the first analysis of each, tokens processed)`.

  A prompt is a `step_judge.judge_prompt` text or `step_judge.judge_prompt_ids` ids (no BOS). See the module
  docstring for the two scoring rules.
  """
  tk = CHAR
  cue = tk.cue_id(step_judge.VERDICT_CUE)
  plus, minus = (int(tk.encode(v)[0]) for v in (step_judge.GOOD, step_judge.BAD))
  rows = [tk.prompt_ids(p) if isinstance(p, str) else np.concatenate([[tk.bos_id], p]).astype(np.int32)
          for p in prompts]  # BOS + prompt
  width = _bucket(max(len(r) for r in rows), _BUCKET)
  scores, texts, tokens = np.full(len(prompts), 0.5), [], 0
  for start in range(0, len(prompts), _CHUNK):
    chunk = rows[start:start + _CHUNK]
    n = len(chunk)
    padded = chunk + [chunk[0]] * (_bucket(n, 64 if n > 16 else 16) - n)  # few compiled batch sizes
    prompt, valid = tk.left_pad(padded, width, what="judge prompt")
    r = jax.device_get(sample_groups(graphdef, params, prompt, valid, jax.random.fold_in(key, start),
                                     group_size=samples, max_new_tokens=max_new_tokens, temperature=1.0,
                                     greedy=samples == 1, eos_id=tk.eos_id, pad_id=tk.pad_id))
    tokens += int(valid[:n].sum()) + int(r.mask[:n].sum())
    texts.extend(tk.decode(r.tokens[i, 0]) for i in range(n))
    if samples > 1:
      for i in range(n):
        verdicts = [step_judge.parse_verdict(tk.decode(r.tokens[i, j])) for j in range(samples)]
        given = [v for v in verdicts if v is not None]
        if given:
          scores[start + i] = float(np.mean(given))
      continue
    # Greedy: both verdict endings after the analysis, one forward pass.
    t = r.tokens.shape[-1] + 1
    ending = np.full((len(padded), 2, t), tk.pad_id, np.int32)
    mask = np.zeros((len(padded), 2, t), bool)
    at = np.full(len(padded), -1)
    for i in range(n):
      row = r.tokens[i, 0][r.mask[i, 0]]
      where = np.flatnonzero(row == cue)
      if where.size:
        at[i] = where[0] + 1
        ending[i, :, :at[i]] = row[:at[i]]
        ending[i, :, at[i]] = (plus, minus)
        mask[i, :, :at[i] + 1] = True
    ending[n:], mask[n:] = ending[:1], mask[:1]
    if not (at >= 0).any():
      continue
    logp = np.asarray(_ending_logp(graphdef, params, jnp.asarray(prompt), jnp.asarray(valid), jnp.asarray(ending),
                                   jnp.asarray(mask)))  # [N, 2, T]
    tokens += int(mask[:n].sum()) + 2 * int(valid[:n].sum())
    for i in np.flatnonzero(at[:n] >= 0):
      p = np.exp(logp[i, :, at[i]].astype(np.float64))
      scores[start + i] = p[0] / max(p[0] + p[1], 1e-30)
  return scores, texts, tokens


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class LoadedGenerativeJudge(Judge):
  """A trained generative judge, ready to score (built by the trainer's `load`).

  Attributes:
    settings: the judge's settings.
    graphdef, params: its decoder (`nnx.split`).
    max_new_tokens: its response budget (the step-judge task's `max_response_len` at training).
    prior_score: s_0 (`first_step_prior` of the training data).
  """

  name = "generative"
  description = GenerativeJudge.description

  settings: GenerativeJudge
  graphdef: Any
  params: Any
  max_new_tokens: int
  prior_score: float

  def check_task(self, task: Task) -> None:
    self.settings.check_task(task)

  def prior(self, task: Task, problem: Problem) -> float:
    return self.prior_score

  def score(self, task: Task, problem: Problem, response: str, ends: Sequence[int]) -> np.ndarray:
    spans = list(zip([0, *ends[:-1]], ends))
    if not spans:
      return np.zeros(0)
    prompts = [step_judge.judge_prompt(problem, response, s, e) for s, e in spans]
    scores, _, _ = judge_steps(self.graphdef, self.params, prompts, jax.random.key(self.settings.seed),
                               max_new_tokens=self.max_new_tokens, samples=self.settings.samples)
    return scores

  def score_groups(self, task: Task, problems: Sequence[Problem], responses: Sequence[Sequence[str]],
                   ctx) -> JudgeScores:
    """Every step of every response judged in one batched pass (chunks of `_CHUNK` steps).

    The judge prompts are built from the responses' own ids (`ctx.response_ids`, as `mc` and `prm` read them)
    when the caller has them and the task's tokenizer is the judge's (char); else from the texts. A policy may
    write an id outside the character vocabulary (it decodes to U+FFFD), which the text cannot be re-encoded
    from.
    """
    if len(responses) != len(problems):
      raise ValueError(f"need one list of responses per problem, got {len(responses)} for {len(problems)}")
    self.check_task(task)
    start = time.perf_counter()
    tk = task.tokenizer
    ids = ctx.response_ids if ctx is not None and isinstance(tk, CharTokenizer) else None
    prompts, counts = [], []
    for b, (problem, group) in enumerate(zip(problems, responses)):
      row = []
      for g, response in enumerate(group):
        spans = step_judge.step_spans(task, response)
        if ids is None:
          prompts.extend(step_judge.judge_prompt(problem, response, s, e) for s, e in spans)
        else:
          body = np.asarray(ids[b][g], np.int32).reshape(-1)
          body = body[:-1] if len(body) and np.isin(body[-1], tk.eos_ids) else body
          ends = [int(e) for e in tk.step_token_ends(body, [e for _, e in spans])]
          prompts.extend(step_judge.judge_prompt_ids(problem, body, s, e) for s, e in zip([0, *ends[:-1]], ends))
        row.append(len(spans))
      counts.append(row)
    flat, tokens = np.zeros(0), 0
    if prompts:
      key = ctx.key if ctx is not None and ctx.key is not None else jax.random.key(self.settings.seed)
      flat, _, tokens = judge_steps(self.graphdef, self.params, prompts, key, max_new_tokens=self.max_new_tokens,
                                    samples=self.settings.samples)
    rows, at = [], 0
    for row in counts:
      out = []
      for k in row:
        out.append(np.concatenate([[self.prior_score], flat[at:at + k]]))
        at += k
      rows.append(out)
    scores, valid = pad_scores(rows)
    return JudgeScores(scores, valid, tokens=tokens, seconds=time.perf_counter() - start)
