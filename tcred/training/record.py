"""Recorded RL steps for the credit explorer: one compressed, versioned file per recorded step.

A run records, every `rl.record_every` steps (default: its evaluation steps) and at its last step,
`RUN/explore/step-SSSSSS.npz` (`np.savez_compressed`, written atomically, no pickled objects):

  version      `[]` int32, `RECORD_VERSION`
  meta         `[]` str: JSON {"step", "name", "seed", "task", "credit", "prompts" [B], "texts" [B][G],
               "pieces" [B][G][n]: the text of each valid response token (EOS: ""), "signals" [names]}
  tokens       `[B, G, T]` int32 response token ids
  mask         `[B, G, T]` bool, True on response tokens (EOS included)
  group_valid  `[B]` bool, False for filler groups (dynamic sampling) that did not train
  rewards      `[B, G]` float32 outcome rewards
  outcome_advantage `[B, G]` float32 GRPO group advantage of each rollout (the outcome baseline)
  credit       `[B, G, T]` float32 the final per-token advantage of the run's credit method
  weight       `[B, G, T]` float32 its loss weight (0: the token does not train)
  signal/NAME  `[B, G, T]` float32, one per recorded signal: `entropy` and `surprisal` (−log p of the
               sampled token) of the policy the step trains, at the sampling temperature, every
               `[B, G, T]` float extra the credit method received (e.g. `info_gain`), the signals derived
               from its extras (`method_signals`: a step judge's `judge_score` and `judge_change`, a tree
               run's `tree-sibling-gap`, `xroll-sigma` for methods given `info_gain`; new names need no
               new version: the loader reads the names meta lists); for a task with an oracle, `oracle_value` (the exact value of the prefix through each token) and `fatal`
               (1 on the fatal errors: the value goes 1 → 0), `oracle_signals`
  decisive/labelled  `[B]` bool, decisive/advantage `[B, G, T]` float32, decisive/flag `[B, G, T]` bool:
               the identifiability study's decisive tokens on the first `rl.record_decisive_prompts`
               trained prompts (`decisive_labels`; version 2, only when labelled; meta "decisive" holds
               K, δ and the cost, null otherwise)

`load_record(path)` reads one back and validates it; it reads version 1 files too (no decisive flags) and
refuses any other version, naming it. The signals come from one forward pass of the policy before its
update (`capture`), the same values the train step's credit method sees.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import pathlib
import re
import zipfile
import jax
import numpy as np

from tcred.credit.base import CreditInputs
from tcred.credit.judge import JUDGE_EXTRAS
from tcred.credit.outcome import outcome_advantages
from tcred.judges.credit import step_change_per_token, steps_to_tokens
from tcred.judges.mc import decisive_tokens, token_advantages, token_values
from tcred.judges.oracle import fatal_tokens, prefix_values
from tcred.signals import get_signal  # the package registers every signal
from tcred.training.step import batch_logprobs
from tcred.training.tracking import atomic_path

RECORD_VERSION = 2  # 2: optional decisive-token flags (`DecisiveLabels`)
READABLE_VERSIONS = (1, 2)
DECISIVE_NAMESPACE = 0xDEC1  # seed namespace of the decisive flags' continuations (not the run's key stream)
RECORD_DIR = "explore"
_NAME = re.compile(r"^step-(\d{6,})\.npz$")
_ARRAYS = ("tokens", "mask", "group_valid", "rewards", "outcome_advantage", "credit", "weight")


class RecordError(ValueError):
  """A record file that cannot be read: missing, corrupt, truncated, another version, bad shapes."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecisiveLabels:
  """The identifiability study's decisive tokens (DESIGN §5) on some prompts of a recorded step.

  A token is decisive when |A_t| ≥ δ, A_t = V̂(o_≤t) − V̂(o_<t) its Monte-Carlo advantage, V̂ the mean reward
  of K continuations of the prefix by the policy the step trains (`tcred.judges.mc.token_values`,
  `decisive_tokens`: the study's own functions).

  Attributes:
    labelled: `[B]` bool, the prompts whose tokens were labelled (the others hold 0 / False).
    advantage: `[B, G, T]` float32 A_t. decisive: `[B, G, T]` bool.
    continuations: K. delta: δ. prefixes: distinct prefixes continued. tokens: token positions the policy
      ran (prefill + continuations). seconds: wall time of the labelling.
  """

  labelled: np.ndarray
  advantage: np.ndarray
  decisive: np.ndarray
  continuations: int
  delta: float
  prefixes: int = 0
  tokens: int = 0
  seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRecord:
  """One recorded RL step (shapes: B prompts, G rollouts per prompt, T response tokens).

  Attributes:
    step: the step number (as in metrics.jsonl: the update this batch trained).
    name, seed, task, credit: the run's experiment, seed, task and credit method.
    prompts: B prompt texts. texts: B lists of G response texts. pieces: `[B][G][n]` token texts.
    tokens, mask, credit, weight: `[B, G, T]`. group_valid: `[B]`. rewards, outcome_advantage: `[B, G]`.
    signals: `{name: [B, G, T] float32}`.
    decisive: the decisive-token flags (`DecisiveLabels`), or None (not labelled; version 1 records).
  """

  step: int
  name: str
  seed: int
  task: str
  credit_method: str
  prompts: list[str]
  texts: list[list[str]]
  pieces: list[list[list[str]]]
  tokens: np.ndarray
  mask: np.ndarray
  group_valid: np.ndarray
  rewards: np.ndarray
  outcome_advantage: np.ndarray
  credit: np.ndarray
  weight: np.ndarray
  signals: dict[str, np.ndarray]
  decisive: DecisiveLabels | None = None

  def __post_init__(self):
    check_shapes(self)


def check_shapes(r: StepRecord) -> None:
  """Raises RecordError unless every array of `r` has the documented shape."""
  if r.tokens.ndim != 3:
    raise RecordError(f"tokens must be [B, G, T], got shape {r.tokens.shape}")
  b, g, t = r.tokens.shape
  want = {"mask": (b, g, t), "credit": (b, g, t), "weight": (b, g, t), "group_valid": (b,),
          "rewards": (b, g), "outcome_advantage": (b, g)}
  want.update({f"signal/{k}": (b, g, t) for k in r.signals})
  if r.decisive is not None:
    want.update({"decisive/labelled": (b,), "decisive/advantage": (b, g, t), "decisive/flag": (b, g, t)})
  for key, shape in want.items():
    if key.startswith("decisive/"):
      x = getattr(r.decisive, {"labelled": "labelled", "advantage": "advantage", "flag": "decisive"}[key[9:]])
    else:
      x = r.signals[key[7:]] if key.startswith("signal/") else getattr(r, key)
    if x.shape != shape:
      raise RecordError(f"{key} must have shape {shape} ([B, G, T] = {(b, g, t)}), got {x.shape}")
  if len(r.prompts) != b or len(r.texts) != b or len(r.pieces) != b:
    raise RecordError(f"prompts, texts and pieces must hold B={b} entries, got {len(r.prompts)}, "
                      f"{len(r.texts)}, {len(r.pieces)}")
  lengths = r.mask.sum(-1)
  for i in range(b):
    if len(r.texts[i]) != g or len(r.pieces[i]) != g:
      raise RecordError(f"prompt {i}: texts and pieces must hold G={g} rollouts")
    for j in range(g):
      if len(r.pieces[i][j]) != lengths[i, j]:
        raise RecordError(f"prompt {i} rollout {j}: {len(r.pieces[i][j])} token pieces for "
                          f"{int(lengths[i, j])} response tokens")


def record_path(run_dir: str | pathlib.Path, step: int) -> pathlib.Path:
  return pathlib.Path(run_dir) / RECORD_DIR / f"step-{step:06d}.npz"


def recorded_steps(run_dir: str | pathlib.Path) -> list[int]:
  """The steps with a record file under `run_dir/explore/`, ascending (files are not opened)."""
  folder = pathlib.Path(run_dir) / RECORD_DIR
  if not folder.is_dir():
    return []
  return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def record_due(every: int | None, eval_every: int, steps: int, done: int) -> bool:
  """Whether the RL loop records step `done` (1-based): every `every` steps (None: every `eval_every`)
  and at the last step; `every` = 0 never."""
  every = eval_every if every is None else every
  return every > 0 and (done % every == 0 or done == steps)


def token_pieces(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[list[list[str]]]:
  """`[B][G][n]` text of each valid response token (n = mask row sum), from
  `TaskTokenizer.decode_with_offsets` (EOS and other special tokens: "")."""
  out = []
  for tok_b, mask_b in zip(tokens, mask):
    rows = []
    for ids, m in zip(tok_b, mask_b):
      n = int(m.sum())
      text, starts = tokenizer.decode_with_offsets(np.asarray(ids[:n]))
      starts = [int(s) for s in starts] + [len(text)]
      rows.append([text[starts[k]:max(starts[k], starts[k + 1])] for k in range(n)])
    out.append(rows)
  return out


def save_record(run_dir: str | pathlib.Path, record: StepRecord) -> pathlib.Path:
  """Writes `record` to `record_path(run_dir, record.step)` atomically (whole or absent); returns the path."""
  path = record_path(run_dir, record.step)
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = {"step": record.step, "name": record.name, "seed": record.seed, "task": record.task,
          "credit": record.credit_method, "prompts": record.prompts, "texts": record.texts,
          "pieces": record.pieces, "signals": list(record.signals), "decisive": None}
  arrays = {k: np.asarray(getattr(record, k)) for k in _ARRAYS}
  arrays.update({f"signal/{k}": np.asarray(v, np.float32) for k, v in record.signals.items()})
  d = record.decisive
  if d is not None:
    meta["decisive"] = {"continuations": int(d.continuations), "delta": float(d.delta), "prefixes": int(d.prefixes),
                        "tokens": int(d.tokens), "seconds": float(d.seconds)}
    arrays.update({"decisive/labelled": np.asarray(d.labelled, bool),
                   "decisive/advantage": np.asarray(d.advantage, np.float32),
                   "decisive/flag": np.asarray(d.decisive, bool)})
  buf = io.BytesIO()
  np.savez_compressed(buf, version=np.int32(RECORD_VERSION), meta=np.array(json.dumps(meta)), **arrays)
  with atomic_path(path) as tmp:
    tmp.write_bytes(buf.getvalue())
  return path


def load_record(path: str | pathlib.Path) -> StepRecord:
  """Reads a record file written by `save_record` and validates it.

  Reads every version in `READABLE_VERSIONS` (version 1: `decisive` is None).

  Raises:
    RecordError: the file is missing, not a record (corrupt or truncated zip, a missing array), of
      a version this tcred does not read, or its arrays do not have the documented shapes; the message
      names the file and the problem.
  """
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      names = set(z.files)
      missing = [k for k in ("version", "meta", *_ARRAYS) if k not in names]
      if missing:
        raise RecordError(f"lacks the arrays {missing}")
      version = int(z["version"])
      if version not in READABLE_VERSIONS:
        raise RecordError(f"is record version {version}; this tcred reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
      meta = json.loads(str(z["meta"]))
      arrays = {k: z[k] for k in _ARRAYS}
      signals = {k: z[f"signal/{k}"] for k in meta["signals"]}
      decisive = None
      if version >= 2 and meta.get("decisive") is not None:
        missing = [k for k in ("decisive/labelled", "decisive/advantage", "decisive/flag") if k not in names]
        if missing:
          raise RecordError(f"lacks the arrays {missing}")
        info = meta["decisive"]
        decisive = DecisiveLabels(labelled=z["decisive/labelled"], advantage=z["decisive/advantage"],
                                  decisive=z["decisive/flag"], continuations=int(info["continuations"]),
                                  delta=float(info["delta"]), prefixes=int(info["prefixes"]),
                                  tokens=int(info["tokens"]), seconds=float(info["seconds"]))
    return StepRecord(step=int(meta["step"]), name=meta["name"], seed=int(meta["seed"]), task=meta["task"],
                      credit_method=meta["credit"], prompts=meta["prompts"], texts=meta["texts"],
                      pieces=meta["pieces"], signals=signals, decisive=decisive, **arrays)
  except RecordError as e:
    raise RecordError(f"record {path} {e}" if str(e).startswith(("lacks", "is record")) else
                      f"record {path} is invalid: {e}") from None
  except FileNotFoundError:
    raise RecordError(f"record {path} does not exist") from None
  except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
    raise RecordError(f"record {path} is corrupt or truncated ({type(e).__name__}: {e})") from None


@functools.partial(jax.jit, static_argnames=("graphdef", "credit", "temperature", "chunk_size"))
def _credit_view(params, batch, *, graphdef, credit, temperature: float, chunk_size: int):
  logp, ent = batch_logprobs(graphdef, params, batch, temperature=temperature, chunk_size=chunk_size)
  out = credit(CreditInputs(rewards=batch.rewards, mask=batch.mask, group_valid=batch.group_valid, entropy=ent,
                            logp=logp, old_logp=batch.old_logp, extras=batch.extras))
  outcome = outcome_advantages(batch.rewards, batch.group_valid, mode="grpo")
  return logp, ent, out.advantages, out.weights, outcome


def capture(graphdef, params, batch, *, credit, temperature: float, chunk_size: int) -> dict[str, np.ndarray]:
  """The recorded per-token arrays of one RL batch (`tcred.training.step.Batch`) under `params`, the
  policy before the step's update: `{"credit", "weight", "signal/entropy", "signal/surprisal", "signal/X"
  for every float [B, G, T] extra X and every signal `method_signals` derives from the extras}`, host float32 arrays `[B, G, T]`, and "outcome_advantage" `[B, G]`: the
  GRPO group advantage (`tcred.credit.outcome.outcome_advantages`, 0 on filler groups), the outcome
  baseline the page shows beside the method's credit.

  One forward pass through `tcred.training.step.batch_logprobs` and the credit method itself (the
  computation of `rl_train_step`'s loss, without its gradient), so the credit is the one the step uses."""
  logp, ent, adv, weight, outcome = jax.device_get(_credit_view(params, batch, graphdef=graphdef, credit=credit,
                                                       temperature=temperature, chunk_size=chunk_size))
  mask = np.asarray(batch.mask)
  zero = lambda x: np.where(mask, np.asarray(x, np.float32), 0.0).astype(np.float32)
  out = {"credit": zero(adv), "weight": zero(weight), "signal/entropy": zero(ent), "signal/surprisal": zero(-logp),
         "outcome_advantage": np.asarray(outcome, np.float32)}
  for k, v in batch.extras.items():
    if tuple(v.shape) == mask.shape and jax.numpy.issubdtype(v.dtype, jax.numpy.floating) and f"signal/{k}" not in out:
      out[f"signal/{k}"] = zero(jax.device_get(v))
  for k, v in method_signals(batch.extras, mask, batch.rewards).items():
    out.setdefault(f"signal/{k}", v)
  return out


# Registered token signals (`tcred.signals`) recorded whenever the credit method's extras hold their inputs:
# cheap functions of arrays the run computed anyway (a tree run's forest; the answer information gain).
RECORDED_SIGNALS = ("tree-sibling-gap", "xroll-sigma")


def method_signals(extras, mask, rewards) -> dict[str, np.ndarray]:
  """The per-token signals derived from the extras a credit method received (`CreditInputs.extras` of a batch,
  `mask` `[B, G, T]`, `rewards` `[B, G]`), host float32 `[B, G, T]`, 0 on padding:

  - `judge_score`, `judge_change` with a step judge's extras (`tcred.credit.judge.JUDGE_EXTRAS`): the score
    s_k of each token's step k (`tcred.judges.credit.steps_to_tokens`) and |s_k − s_{k−1}|
    (`step_change_per_token`, the identifiability study's judge row);
  - every signal of `RECORDED_SIGNALS` whose inputs the extras hold (`tree-sibling-gap` on tree runs,
    `xroll-sigma` for methods given `info_gain`), computed by the registered signal itself.

  DRO's σ_j (`ref_std`, `[B, J]` over the reference answer's tokens) is no per-token array: it is not recorded.
  `xroll-sigma` needs `info_gain`, the answer-scoring pass (a forward of the reference answer after every
  prefix): recorded for methods that run that pass — those that ask for `info_gain` and DRO's (their pass for
  `ref_logp` gives `info_gain` for a sum, `rl._sample_chunk` keeps it; their metrics gain the σ signals'
  agreement rows)."""
  mask = np.asarray(mask, bool)
  out = {}
  if all(k in extras for k in JUDGE_EXTRAS):
    scores, valid, steps = (np.asarray(jax.device_get(extras[k])) for k in JUDGE_EXTRAS)
    b, g, t = mask.shape
    flat = lambda x: x.reshape(b * g, x.shape[-1])
    score = np.asarray(steps_to_tokens(flat(np.where(valid, scores, 0.0)), flat(steps), flat(mask))).reshape(b, g, t)
    out["judge_score"] = score
    out["judge_change"] = step_change_per_token(scores, valid, steps)
  arrays = {**extras, "mask": mask, "rewards": rewards}
  for name in RECORDED_SIGNALS:
    signal = get_signal(name)
    if all(k in arrays for k in signal.inputs):
      out[name] = jax.device_get(signal(arrays))
  return {k: np.where(mask, np.asarray(v, np.float32), 0.0).astype(np.float32) for k, v in out.items()}


def oracle_signals(task, problems, tokens: np.ndarray, mask: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
  """For a task with an oracle (`Task.has_oracle`): `{"oracle_value": [B, G, T]` the exact value of the
  prefix through each token (`tcred.judges.oracle.prefix_values`; the last token's is the
  reward), `"fatal": [B, G, T]` 1.0 on the fatal errors (`fatal_tokens`: the value goes 1 → 0)}; {} without
  an oracle. The decisive tokens of the identifiability study need Monte-Carlo continuations: `decisive_labels`."""
  if not getattr(task, "has_oracle", False):
    return {}
  oracle = prefix_values(task, problems, tokens, mask, rewards)  # [B, G, T + 1]
  value = np.where(mask, np.nan_to_num(oracle[..., 1:]), 0.0).astype(np.float32)
  return {"oracle_value": value, "fatal": fatal_tokens(oracle, mask).astype(np.float32)}


def decisive_labels(graphdef, params, task, problems, tokens: np.ndarray, mask: np.ndarray, rewards: np.ndarray,
                    group_valid: np.ndarray, *, prompts: int, continuations: int, delta: float, key: jax.Array,
                    temperature: float, top_p: float = 1.0) -> DecisiveLabels | None:
  """The decisive tokens of the first `prompts` trained groups (`group_valid`) of a batch `[B, G, T]`, under
  the policy `params` (the one that sampled them): V̂ of every prefix from K = `continuations` continuations
  (`tcred.judges.mc.token_values`; with a task oracle, prefixes it calls lost are V = 0 and not continued),
  A_t = V̂_{t+1} − V̂_t, decisive |A_t| ≥ `delta` (`decisive_tokens`, as `tcred identify`). None when
  `prompts` = 0 or no group trained.

  Cost: every distinct prefix of the chosen prompts' G responses is continued K times, each continuation up
  to T tokens: about prompts·G·L·K·T/2 sampled tokens (L the mean response length), fewer after lost prefixes."""
  tokens, mask, rewards = np.asarray(tokens), np.asarray(mask, bool), np.asarray(rewards, np.float32)
  chosen = np.flatnonzero(np.asarray(group_valid, bool))[:prompts]
  if prompts <= 0 or not len(chosen):
    return None
  sub = [problems[i] for i in chosen]
  lost = None
  if getattr(task, "has_oracle", False):
    lost = prefix_values(task, sub, tokens[chosen], mask[chosen], rewards[chosen])[..., :-1] == 0.0
  v = token_values(graphdef, params, task, sub, tokens[chosen], mask[chosen], rewards[chosen],
                   continuations=continuations, key=key, temperature=temperature, top_p=top_p, lost=lost)
  b = tokens.shape[0]
  labelled = np.zeros(b, bool)
  labelled[chosen] = True
  advantage = np.zeros(tokens.shape, np.float32)
  decisive = np.zeros(tokens.shape, bool)
  advantage[chosen] = token_advantages(v.values, mask[chosen])
  decisive[chosen] = decisive_tokens(v.values, mask[chosen], delta)
  return DecisiveLabels(labelled=labelled, advantage=advantage, decisive=decisive, continuations=continuations,
                        delta=float(delta), prefixes=v.prefixes, tokens=v.tokens, seconds=v.seconds)


def make_record(*, step: int, name: str, seed: int, task, problems, groups, group_valid: np.ndarray,
                captured: dict[str, np.ndarray], credit_method: str,
                decisive: DecisiveLabels | None = None) -> StepRecord:
  """A `StepRecord` of one RL batch: the sampled `groups` (`tcred.sampling.rollout.Groups`) of `problems`
  on `task`, with the arrays `capture` returned and the `decisive_labels` (or None)."""
  r = groups.rollouts
  tokens, mask = np.asarray(r.tokens, np.int32), np.asarray(r.mask, bool)
  rewards = np.asarray(groups.rewards, np.float32)
  valid = np.asarray(group_valid, bool)
  return StepRecord(
      step=step, name=name, seed=seed, task=task.name, credit_method=credit_method,
      prompts=[p.prompt for p in problems], texts=[list(t) for t in groups.texts],
      pieces=token_pieces(task.tokenizer, tokens, mask), tokens=tokens, mask=mask, group_valid=valid,
      rewards=rewards, outcome_advantage=captured["outcome_advantage"],
      credit=captured["credit"], weight=captured["weight"],
      signals={**{k[7:]: v for k, v in captured.items() if k.startswith("signal/")},
               **oracle_signals(task, problems, tokens, mask, rewards)}, decisive=decisive)
