"""Experiment configuration: frozen dataclasses, resolved to JSON, overridable with
`--set section.field=value` (the CLI contract of DESIGN §2)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, ClassVar

from tcred.credit.base import CreditMethod, credit_class
from tcred.losses.pg import LossConfig
from tcred.models.config import ModelConfig
from tcred.parallel.mesh import MeshConfig
from tcred.sampling.tree import ForkRule, TreeRoot
from tcred.tasks.registry import task_config_class, task_entry
from tcred.validation import HASH_NEUTRAL_DEFAULT, require_finite, require_seed


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig:
  """Supervised fine-tuning of the base policy on noisy demonstrations.

  The base policy depends only on (model, task, sft) and is cached by their hash,
  so every RL seed of an experiment starts from the same base policy.
  """

  section: ClassVar[str] = "sft"
  steps: int = 1500
  batch_size: int = 64
  lr: float = 1e-3
  warmup: int = 50
  weight_decay: float = 0.0
  seed: int = 0

  def __post_init__(self):
    require_finite(self, self.section)
    _positive(self, "steps", "batch_size", "lr")
    _non_negative(self, "warmup", "weight_decay")
    require_seed(self.seed, "sft.seed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig:
  """The RL loop.

  Attributes:
    steps: updates (one per batch of `prompts_per_step × group_size` rollouts).
    prompts_per_step: B. group_size: G rollouts per prompt.
    lr, warmup, weight_decay, max_grad_norm: AdamW with linear warmup.
    temperature, top_p: the sampling rule (also the temperature of the train-step entropy).
    dynamic_sampling: DAPO: drop groups whose rewards are all equal and refill
      with new prompts, up to `max_refill_rounds` extra sampling rounds.
    eval_every, eval_prompts, eval_samples: the periodic pass@1 curve.
    final_eval_prompts, final_eval_samples: base and final pass@1
      (≥ 2,000 samples by default: 256 held-out prompts × 8).
    checkpoint_every: steps between Orbax checkpoints (the last step is always saved); the last two are kept.
    keep_every: also checkpoint every `keep_every` steps and never rotate those out (Orbax's `EveryNSteps`
      preservation beside the last two), so that `tcred identify TASK --policy RUN --steps 0,10,20` finds the
      policy at each step; None (default): only the last two checkpoints are kept. Not a setting of the
      run's results (left out of config hashes and `--resume` checks, like `record_every`).
    max_nonfinite: abort after this many non-finite updates in a row.
    hold_on_zero_grad: a step whose gradient is exactly zero (every group's rewards equal and no other loss
      term) leaves the parameters and the optimizer state unchanged; False (default): AdamW still applies
      its momentum (about ten steps' worth in total at β1 = 0.9) to a policy that received no signal.
      Kept off: on 12 tuning seeds of lock-chain-k12-grpo the hold lowered the pass@1 curve on 11 (mean
      −0.063, Wilcoxon p 0.034) and left the final pass@1 unchanged (`benchmarks/results/zero_grad_hold.md`).
    chunk_size: tokens per chunk of the fused log-prob/entropy path.
    record_every: steps between the credit explorer's records (`tcred.training.record`, `tcred explore`);
      None (default): at the evaluation steps (`eval_every`); the last step is always recorded; 0: never.
      Not a setting of the run's results (left out of config hashes and `--resume` checks).
    record_decisive_prompts: P, how many prompts of each recorded step get the identifiability study's
      decisive-token flags (|A_t| ≥ δ, A_t the Monte-Carlo advantage of the token from K continuations of
      every prefix, `tcred.judges.mc.token_values`): the first P trained groups; 0 (default): none. Costs
      about P·G·T·K/2 sampled tokens per recorded step (prefixes the task oracle calls lost are not
      continued); measured figures in README "Credit explorer". Not a setting of the results either.
    record_decisive_continuations: K continuations per prefix (identify's default, 32).
    record_decisive_delta: δ in (0, 1) (identify's default, 0.25).
  """

  section: ClassVar[str] = "rl"
  steps: int = 300
  prompts_per_step: int = 16
  group_size: int = 8
  lr: float = 1e-4
  warmup: int = 10
  weight_decay: float = 0.0
  max_grad_norm: float = 1.0
  temperature: float = 1.0
  top_p: float = 1.0
  dynamic_sampling: bool = False
  max_refill_rounds: int = 3
  eval_every: int = 50
  eval_prompts: int = 64
  eval_samples: int = 4
  final_eval_prompts: int = 256
  final_eval_samples: int = 8
  checkpoint_every: int = 50
  keep_every: int | None = None
  max_nonfinite: int = 5
  hold_on_zero_grad: bool = dataclasses.field(default=False, metadata=HASH_NEUTRAL_DEFAULT)  # added in session 14
  chunk_size: int = 1024
  record_every: int | None = None
  record_decisive_prompts: int = 0
  record_decisive_continuations: int = 32
  record_decisive_delta: float = 0.25

  def __post_init__(self):
    require_finite(self, self.section)
    if self.record_every is not None and (isinstance(self.record_every, bool) or self.record_every < 0):
      raise ValueError(f"rl.record_every must be >= 0 (0: never) or None (at the evaluation steps), "
                       f"got {self.record_every!r}")
    if isinstance(self.record_decisive_prompts, bool) or self.record_decisive_prompts < 0:
      raise ValueError(f"rl.record_decisive_prompts must be an integer >= 0 (0: no decisive flags), "
                       f"got {self.record_decisive_prompts!r}")
    if isinstance(self.record_decisive_continuations, bool) or self.record_decisive_continuations < 1:
      raise ValueError(f"rl.record_decisive_continuations must be an integer >= 1, "
                       f"got {self.record_decisive_continuations!r}")
    if not 0.0 < self.record_decisive_delta < 1.0:
      raise ValueError(f"rl.record_decisive_delta must be in (0, 1), got {self.record_decisive_delta!r}")
    if self.keep_every is not None and (isinstance(self.keep_every, bool) or self.keep_every < 1):
      raise ValueError(f"rl.keep_every must be an integer >= 1 or None (keep only the last two checkpoints), "
                       f"got {self.keep_every!r}")
    _positive(self, "steps", "prompts_per_step", "group_size", "lr", "temperature", "eval_every",
              "eval_prompts", "eval_samples", "final_eval_prompts", "final_eval_samples",
              "checkpoint_every", "max_nonfinite", "chunk_size")
    _non_negative(self, "warmup", "weight_decay", "max_grad_norm", "max_refill_rounds")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"rl.top_p must be in (0, 1], got {self.top_p}")

  @property
  def held_out_prompts(self) -> int:
    """How many held-out prompts the run evaluates on, all of them kept out of SFT and RL:
    max(final_eval_prompts, eval_prompts) (the periodic evaluation uses a prefix of them)."""
    return max(self.final_eval_prompts, self.eval_prompts)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeConfig:
  """Tree rollouts (DESIGN §4.5): M chains per prompt, then L rounds of forks.

  Attributes:
    enabled: sample trees instead of G independent chains.
    trees: M chains (trees) per prompt.
    rounds: L fork rounds.
    forks: N fork points per tree and round.
    branch: C continuations per fork point.
    fork_at: where to fork: "step" (uniformly at the task's step boundaries,
      Tree-GRPO), "entropy" (top-N tokens by the sampling distribution's
      entropy, EPTree) or "neg-logp" (top-N by the sampled token's −log p,
      EPTree's proxy).
    root: where a prompt's M chains hang in the credit methods' node arrays
      (`tcred.sampling.tree.TreeRoot`): "prompt" (one root per prompt, the
      M chains under it, as DESIGN §4.5 and TreeRL's released code; TreeRL's
      V(root) is the mean over all the prompt's leaves) or "chain" (one root
      per chain, the behaviour before session 5). Tree-GRPO's leaf groups come
      from the tree ids and do not depend on it.
  The leaves per prompt, M·(1 + L·N·C), must equal `rl.group_size`.
  """

  section: ClassVar[str] = "tree"
  enabled: bool = False
  trees: int = 2
  rounds: int = 1
  forks: int = 3
  branch: int = 1
  fork_at: str = "step"
  root: str = "prompt"

  def __post_init__(self):
    require_finite(self, self.section)
    _positive(self, "trees", "forks", "branch")
    _non_negative(self, "rounds")
    ForkRule.parse(self.fork_at, field="tree.fork_at")
    TreeRoot.parse(self.root, field="tree.root")

  @property
  def leaves(self) -> int:
    """Leaves (complete rollouts) per prompt: M·(1 + L·N·C)."""
    return self.trees * (1 + self.rounds * self.forks * self.branch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
  """Everything that defines a run, except the seed."""

  name: str
  description: str
  method: str  # the method family's name for this experiment (e.g. "grpo"), the same for every task
  task: str
  task_config: Any  # the task's frozen config dataclass
  model: ModelConfig
  sft: SFTConfig
  rl: RLConfig
  credit: CreditMethod
  loss: LossConfig
  tree: TreeConfig = dataclasses.field(default_factory=lambda: TreeConfig())
  mesh: MeshConfig = dataclasses.field(default_factory=lambda: MeshConfig())  # where, not what (not a setting)

  def __post_init__(self):
    if not self.method or not isinstance(self.method, str):
      raise ValueError(f"method must be a non-empty method name (e.g. 'grpo'), got {self.method!r}")
    for section in _SECTIONS:  # every field of every section, whatever built it (task and credit configs too)
      require_finite(getattr(self, section), section)
    tree = self.tree
    if tree.enabled:
      if tree.leaves != self.rl.group_size:
        raise ValueError(
            f"rl.group_size ({self.rl.group_size}) must equal the leaves per prompt of tree sampling, "
            f"tree.trees × (1 + tree.rounds × tree.forks × tree.branch) = {tree.leaves}")
      if self.rl.dynamic_sampling or type(self.credit).group_filter is not CreditMethod.group_filter:
        raise ValueError("tree sampling does not support rl.dynamic_sampling or credit methods that "
                         "filter groups")
    mi, layers = self.credit.mi_inputs(), self.model.num_hidden_layers
    if mi is not None and not -layers <= mi.layer < layers:
      raise ValueError(f"credit.mi_layer={mi.layer} must be in [{-layers}, {layers}) for "
                       f"model.num_hidden_layers={layers} (negative: from the last layer)")
    if self.credit.needs_tree and not tree.enabled:
      raise ValueError(f"credit method {self.credit.name!r} needs tree rollouts: set tree.enabled=true")
    self.credit.check_task(task_entry(self.task).task_cls)

  def to_dict(self) -> dict[str, Any]:
    return {
        "name": self.name, "description": self.description, "method": self.method, "task": self.task,
        "task_config": dataclasses.asdict(self.task_config), "model": dataclasses.asdict(self.model),
        "sft": dataclasses.asdict(self.sft), "rl": dataclasses.asdict(self.rl),
        "credit": {"name": self.credit.name, **dataclasses.asdict(self.credit)},
        "loss": dataclasses.asdict(self.loss), "tree": dataclasses.asdict(self.tree),
        "mesh": dataclasses.asdict(self.mesh),
    }

  def with_overrides(self, assignments: list[str]) -> "ExperimentConfig":
    """Applies `section.field=value` assignments; raises ValueError listing what is allowed.

    Each section is validated as it changes; the experiment as a whole (e.g. the
    tree leaves against `rl.group_size`) once all assignments are applied.
    """
    sections = {s: getattr(self, s) for s in _SECTIONS}
    for item in assignments:
      if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
      key, raw = item.split("=", 1)
      section, _, field = key.partition(".")
      if section not in _SECTIONS or not field:
        allowed = [f"{s}.<field>" for s in _SECTIONS]
        raise ValueError(f"unknown --set key {key!r}; allowed: {allowed}")
      obj = sections[section]
      fields = {f.name: f for f in dataclasses.fields(obj)}
      if field not in fields:
        raise ValueError(f"unknown --set key {key!r}; {section} fields: {sorted(fields)}")
      value = _parse(raw, type(obj), field, key)
      try:
        sections[section] = dataclasses.replace(obj, **{field: value})
      except ValueError as e:  # the section's own message; make sure it names the key the user typed
        raise ValueError(str(e) if key in str(e) else f"--set {key}={raw}: {e}") from None
    return dataclasses.replace(self, **sections)


_SECTIONS = ("task_config", "model", "sft", "rl", "credit", "loss", "tree", "mesh")


# A run's resolved config minus these keys (and sections: the mesh says where a run computes; the method is
# a label, like the description) is what its results depend on.
# A field that only says what a run records (`rl.record_every`, `rl.record_decisive_*`: the credit explorer;
# `rl.keep_every`, the checkpoints it keeps) is no setting either.
_NOT_SETTINGS = ("description", "method", "seed", "mesh", "rl.record_every", "rl.record_decisive_prompts",
                 "rl.record_decisive_continuations", "rl.record_decisive_delta", "rl.keep_every")


def _is_setting(key: str) -> bool:
  """Whether a flat config key (`"rl.lr"`) is one of a run's settings (not in `_NOT_SETTINGS`)."""
  return key.split(".", 1)[0] not in _NOT_SETTINGS and key not in _NOT_SETTINGS


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A resolved config dict (`ExperimentConfig.to_dict`, or a config.json) as `{"rl.lr": 1e-4, ...}`,
  JSON-normalised (tuples become lists) so that a config read back from disk compares equal."""
  flat = {}
  for key, value in json.loads(json.dumps(d)).items():
    if isinstance(value, dict):
      flat.update(flat_config(value, prefix=f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_diff(found: dict[str, Any], wanted: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
  """The settings that differ between two resolved configs, one `"rl.steps: 6 here, 300 wanted"` per
  field (sorted; `ignore` lists dotted keys to leave out, the description is never compared)."""
  a, b = flat_config(found), flat_config(wanted)
  absent = "<absent>"
  return [f"{k}: {json.dumps(a.get(k, absent))} here, {json.dumps(b.get(k, absent))} wanted"
          for k in sorted(set(a) | set(b))
          if k not in ignore and _is_setting(k) and a.get(k, absent) != b.get(k, absent)]


def normalised_config(d: dict[str, Any]) -> dict[str, Any]:
  """A resolved config read from disk with every field its sections have now: one written before a field
  existed (e.g. model.qk_norm) holds it at its default. Returned as it is when it is not a tcred config."""
  try:
    return {**d, **config_from_dict(d).to_dict()}
  except (ValueError, KeyError, TypeError):
    return d


def _neutral_at_default(config: Any) -> list[str]:
  """The names of the dataclass `config`'s `HASH_NEUTRAL_DEFAULT` fields that hold their defaults."""
  return [f.name for f in dataclasses.fields(config)
          if f.metadata == HASH_NEUTRAL_DEFAULT and getattr(config, f.name) == f.default]


def _flat_neutral_at_default(resolved: dict[str, Any]) -> set[str]:
  """`_neutral_at_default` of every section of a resolved config, as flat keys (`"rl.x"`); none for a dict
  that is not a tcred config."""
  try:
    cfg = config_from_dict(resolved)
  except (ValueError, KeyError, TypeError):
    return set()
  return {f"{section.name}.{name}" for section in dataclasses.fields(cfg)
          if dataclasses.is_dataclass(value := getattr(cfg, section.name)) for name in _neutral_at_default(value)}


def run_config_hash(resolved: dict[str, Any]) -> str:
  """The hash of what a run's results depend on: its resolved config without the description and
  the seed (equal for every seed of one experiment; `rl.steps` included), without the mesh, and without
  the `HASH_NEUTRAL_DEFAULT` fields at their defaults (a field added later leaves earlier hashes as they were)."""
  neutral = _flat_neutral_at_default(resolved)
  return config_hash({k: v for k, v in flat_config(resolved).items() if _is_setting(k) and k not in neutral})


def _hashed(part: Any) -> Any:
  """`part` as hashed: a dataclass as its dict, without its `HASH_NEUTRAL_DEFAULT` fields at their defaults."""
  if not dataclasses.is_dataclass(part):
    return part
  d = dataclasses.asdict(part)
  for name in _neutral_at_default(part):
    del d[name]
  return d


def config_hash(*parts: Any) -> str:
  """Stable short hash of dataclasses / JSON-able values (a dataclass's `HASH_NEUTRAL_DEFAULT` fields count
  only away from their defaults)."""
  return hashlib.sha256(json.dumps([_hashed(p) for p in parts], sort_keys=True).encode()).hexdigest()[:16]


UNRECORDED_METHOD = "unrecorded"  # the method of a config.json written before the field existed


def config_from_dict(d: dict[str, Any]) -> ExperimentConfig:
  """Inverse of `ExperimentConfig.to_dict` (used by `--resume` checks and tables)."""
  credit = dict(d["credit"])
  cls = credit_class(credit.pop("name"))
  return ExperimentConfig(
      name=d["name"], description=d["description"], task=d["task"],
      method=d.get("method", UNRECORDED_METHOD),
      task_config=task_config_class(d["task"])(**d["task_config"]), model=ModelConfig(**d["model"]),
      sft=SFTConfig(**d["sft"]), rl=RLConfig(**d["rl"]), credit=cls(**credit), loss=LossConfig(**d["loss"]),
      tree=TreeConfig(**d.get("tree", {})), mesh=MeshConfig(**d.get("mesh", {})))


TRUE_SPELLINGS, FALSE_SPELLINGS = ("true", "1", "yes"), ("false", "0", "no")
"""How `--set key=value` spells a boolean (any letter case)."""


def _parse(raw: str, cls: type, field: str, key: str) -> Any:
  hints = typing.get_type_hints(cls)
  hint = hints.get(field, str)
  options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
  if raw.lower() == "none" and type(None) in options:
    return None
  for typ in options:
    try:
      if typ is bool:
        if raw.lower() in TRUE_SPELLINGS:
          return True
        if raw.lower() in FALSE_SPELLINGS:
          return False
        raise ValueError
      if typ is int:
        return int(raw)
      if typ is float:
        return float(raw)
      if typ is str:
        return raw
    except ValueError:
      continue
  names = [getattr(t, "__name__", str(t)) for t in options]
  spellings = f" ({'/'.join(TRUE_SPELLINGS)} or {'/'.join(FALSE_SPELLINGS)})" if bool in options else ""
  raise ValueError(f"--set {key}={raw!r}: expected a value of type {' | '.join(names)}{spellings}")


def _positive(obj, *names):
  for name in names:
    if getattr(obj, name) <= 0:
      raise ValueError(f"{obj.section}.{name} must be > 0, got {getattr(obj, name)!r}")


def _non_negative(obj, *names):
  for name in names:
    if getattr(obj, name) < 0:
      raise ValueError(f"{obj.section}.{name} must be >= 0, got {getattr(obj, name)!r}")
