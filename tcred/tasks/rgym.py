"""`reasoning-gym` datasets as a task for real models (issue 15).

Any dataset of the `reasoning-gym` package, by its own name and config:
``reasoning_gym.create_dataset(dataset, size=size, seed=seed, **json.loads(dataset_config))``.
The dataset is a fixed list of `size` entries (question, answer, metadata).

Prompt: ``prompt_template.format(question=entry["question"])``; the default asks
for the answer between ``<answer>`` and ``</answer>`` (reasoning-gym's own
convention). The task's tokenizer is the checkpoint's (`tcred.tasks.text.HFTokenizer`),
so the prompt is rendered with its chat template when it has one.

Answer extraction (the documented rule): the answer is the text after the
**last** ``<answer>`` of the response, up to the first ``</answer>`` after it
(to the end of the response if there is none), with surrounding whitespace
stripped. A response without ``<answer>`` has no answer.

Reward: the dataset's own ``score_answer(answer=<extracted>, entry=entry)``, a
number in [0, 1] (some datasets give partial credit; a response without an
answer scores ``score_answer(None, entry)``, 0 for every dataset we know). A
dataset that raises while scoring gives 0.

Steps: the lines of the reasoning, then the answer (from the last cue on).
There is no exact oracle (`prefix_value` raises); Monte-Carlo values still work.
Demonstrations and `Problem.solution` (an SFT base policy, not used with a
checkpoint; the reference answer of the credit methods that read one) are
``REFERENCE_REASONING``, the cue, the reference answer and ``</answer>``.

Held-out split: the dataset's distinct problems (by `problem_key`: an ARC
puzzle's ``task_id``, else the normalised question) in a fixed random order; the
first n are held out for evaluation, and no entry with a held-out key is trained
on. `size` must leave at least one problem to train on (a smaller dataset is
refused, naming how many are needed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np

from tcred.tasks import base, text

CUE = "<answer>"
CLOSE = "</answer>"
REFERENCE_REASONING = "The answer is "  # One reasoning step before the answer of a reference solution.
SPLIT_SEED = 0x6A11  # The order of the held-out split (one for every run of a dataset config).
DEFAULT_TEMPLATE = ("{question}\n\nThink step by step, then give only the final answer between <answer> and "
                    "</answer>, e.g. <answer>42</answer>.")


def extract_answer(response: str) -> str | None:
  """The answer of `response` by the module docstring's rule, or None without a cue.

  >>> extract_answer("so 3+4=7 <answer> 7 </answer>")
  '7'
  >>> extract_answer("<answer>1</answer> no, <answer>2")
  '2'
  """
  _, cue, rest = response.rpartition(CUE)
  if not cue:
    return None
  return rest.partition(CLOSE)[0].strip()


@functools.lru_cache(maxsize=8)
def _dataset(name: str, config_json: str, size: int, seed: int):
  import reasoning_gym  # Here: importing every dataset module takes seconds.

  return reasoning_gym.create_dataset(name, size=size, seed=seed, **json.loads(config_json))


def dataset_names() -> list[str]:
  """Every dataset name the installed `reasoning-gym` registers."""
  import reasoning_gym.factory

  return sorted(reasoning_gym.factory.DATASETS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReasoningGymConfig:
  """A reasoning-gym dataset and how to prompt a real model with it.

  Attributes:
    dataset: the dataset's reasoning-gym name (e.g. ``"basic_arithmetic"``, ``"leg_counting"``).
    dataset_config: a JSON object of the dataset's own config fields, e.g. ``'{"min_terms": 2}'``.
    size: entries drawn (held-out and training prompts both come from them), in [2, 10_000_000].
    seed: the dataset's seed (>= 0).
    prompt_template: a `str.format` template whose only field is ``{question}``.
    max_response_len: the generation budget in tokens, EOS included, in [1, 1_000_000].
    checkpoint: the Hugging Face checkpoint directory: the task's tokenizer, and the policy the
      `reasoning-gym-*` experiments start from. None only to inspect a config (`tcred show`); a run
      refuses it.
  """

  dataset: str = "basic_arithmetic"
  dataset_config: str = "{}"
  size: int = 1000
  seed: int = 0
  prompt_template: str = DEFAULT_TEMPLATE
  max_response_len: int = 256
  checkpoint: str | None = None

  def __post_init__(self):
    if not isinstance(self.dataset, str) or not self.dataset:
      raise ValueError(f"dataset must be a reasoning-gym dataset name, got {self.dataset!r}")
    try:
      fields = json.loads(self.dataset_config) if isinstance(self.dataset_config, str) else None
    except json.JSONDecodeError as e:
      raise ValueError(f"dataset_config must be a JSON object, got {self.dataset_config!r} ({e.msg})") from None
    if not isinstance(fields, dict):
      raise ValueError(f"dataset_config must be a JSON object of the dataset's config fields, got "
                       f"{self.dataset_config!r}")
    base.check_range("size", self.size, 2, 10_000_000, integer=True)
    base.check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
    base.check_range("max_response_len", self.max_response_len, 1, 1_000_000, integer=True)
    import string

    names = [f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f is not None] \
        if isinstance(self.prompt_template, str) else None
    if names is None or names != ["question"]:
      raise ValueError("prompt_template must be a str.format template with exactly one field '{question}' and no "
                       f"other, got {self.prompt_template!r}")
    if self.checkpoint is not None and not (isinstance(self.checkpoint, str) and os.path.isdir(self.checkpoint)):
      raise ValueError(f"checkpoint must be a Hugging Face checkpoint directory, got {self.checkpoint!r} "
                       "(no such directory)")


class ReasoningGym(base.Task):
  """A reasoning-gym dataset (see the module docstring)."""

  name = "reasoning-gym"
  answer_cue = CUE
  has_oracle = False

  def __init__(self, config: ReasoningGymConfig = ReasoningGymConfig()):
    self.config = config
    try:
      self.dataset = _dataset(config.dataset, json.dumps(json.loads(config.dataset_config), sort_keys=True),
                              config.size, config.seed)
    except Exception as e:  # noqa: BLE001  (reasoning-gym raises ValueError, TypeError, AssertionError, ...)
      known = dataset_names()
      if config.dataset not in known:
        raise ValueError(f"task_config.dataset: unknown reasoning-gym dataset {config.dataset!r}; the installed "
                         f"reasoning-gym has {len(known)}: {', '.join(known)}") from None
      raise ValueError(f"task_config.dataset_config: reasoning-gym dataset {config.dataset!r} refused "
                       f"dataset_config={config.dataset_config!r}: {type(e).__name__}: {e}") from None

  @property
  def checkpoint(self) -> str | None:
    return self.config.checkpoint

  @functools.cached_property
  def tokenizer(self) -> text.TaskTokenizer:
    if self.config.checkpoint is None:
      raise ValueError("task reasoning-gym needs a Hugging Face checkpoint: set task_config.checkpoint=DIR (its "
                       "tokenizer and weights are the policy's)")
    return text.hf_tokenizer(self.config.checkpoint)

  def _problem(self, index: int) -> base.Problem:
    entry = self.dataset[index]
    answer = str(entry["answer"]) + CLOSE
    return base.Problem(prompt=self.config.prompt_template.format(question=entry["question"]), answer=answer,
                        solution=REFERENCE_REASONING + CUE + answer, data=index)

  @functools.cached_property
  def _problems(self) -> list[base.Problem]:
    return [self._problem(i) for i in range(len(self.dataset))]

  @functools.cached_property
  def max_prompt_len(self) -> int:
    return max(len(p.prompt) for p in self._problems)

  @functools.cached_property
  def prompt_width(self) -> int:
    return max(len(self.tokenizer.prompt_ids(p.prompt)) for p in self._problems)

  @property
  def max_response_len(self) -> int:
    return self.config.max_response_len

  def sample(self, rng: np.random.Generator) -> base.Problem:
    """A uniformly drawn entry of the dataset."""
    return self._problems[int(rng.integers(len(self._problems)))]

  def problem_key(self, problem: base.Problem) -> str:
    """The entry's own identity where the dataset gives one, else its normalised question.

    reasoning-gym's metadata names an entry by ``source_dataset`` and ``source_index``, but the index is
    a position in the generated list (two indices may hold the same question), so it identifies no
    problem. The ARC datasets (``arc_agi``, ``rearc``) carry the puzzle's own ``task_id``: their entries
    are augmented copies (rotations, mirrors, colour permutations) or fresh instances of one puzzle, held
    out together, key ``"<source_dataset>#task:<task_id>"``. Every other entry's key is
    ``"<source_dataset>#q:<normalised question>"`` (`tcred.tasks.base.normalise_question`).
    """
    return self._keys[problem.data]

  @functools.cached_property
  def _keys(self) -> list[str]:
    """`problem_key` of every entry, computed once (a training stream asks for one per draw)."""
    keys = []
    for index in range(len(self.dataset)):
      entry = self.dataset[index]
      meta = entry.get("metadata") or {}
      source = meta.get("source_dataset", self.config.dataset)
      if meta.get("task_id") is not None:
        keys.append(f"{source}#task:{meta['task_id']}")
      else:
        keys.append(f"{source}#q:{base.normalise_question(str(entry['question']))}")
    return keys

  def held_out_problems(self, n: int) -> list[base.Problem]:
    distinct = list({self.problem_key(p): p for p in reversed(self._problems)}.values())[::-1]
    if len(distinct) < n + 1:
      raise ValueError(f"reasoning-gym dataset {self.config.dataset!r} with size={self.config.size} has "
                       f"{len(distinct)} distinct problems (by `problem_key`), too few to hold out {n} evaluation "
                       f"prompts and train on the rest: it needs at least {n + 1} (raise task_config.size, or lower "
                       "rl.final_eval_prompts and rl.eval_prompts)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(distinct))
    return [distinct[i] for i in order[:n]]

  def reward(self, problem: base.Problem, response: str) -> float:
    try:
      score = self.dataset.score_answer(answer=extract_answer(response), entry=self.dataset[problem.data])
      return float(min(max(float(score), 0.0), 1.0))
    except Exception:  # noqa: BLE001  # A verifier scores; it never crashes a run.
      return 0.0

  def step_ends(self, response: str) -> list[int]:
    """Ends of the reasoning's lines (before each newline) and of the answer (from the last cue on)."""
    return base.line_step_ends(response, cue=CUE)

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    raise NotImplementedError(
        "task 'reasoning-gym' has no oracle prefix value (whether a prefix can still reach a correct answer is "
        "unknown); estimate it by Monte-Carlo continuations instead")

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """The reference solution (noiseless)."""
    del rng
    return problem.solution

