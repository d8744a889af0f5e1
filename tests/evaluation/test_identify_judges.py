"""The identifiability study's judge rows: a judge's step score change spread over the step's tokens."""

import jax
import numpy as np
import pytest
from flax import nnx

from tcred.evaluation import identify as idf
from tcred.evaluation.identify import signals as study_signals
from tcred.judges.credit import step_change_per_token, token_steps
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.tasks.registry import make_task
from tcred.training.data import eval_problems

TASK = make_task("countdown")


def test_step_changes_spread_on_the_steps_tokens_by_hand():
  # Scores s_0..s_3 = [1, 1, 0, 0]: changes |0|, |−1|, |0|; steps end at tokens 2, 5, 6 (+ EOS at 6).
  steps = token_steps([2, 5, 6], 7, 9)
  got = step_change_per_token(np.array([1.0, 1.0, 0.0, 0.0]), np.ones(4, bool), steps)
  np.testing.assert_array_equal(got, [0, 0, 1, 1, 1, 0, 0, 0, 0])
  # An invalid score (a rollout with fewer steps) gives no change.
  got = step_change_per_token(np.array([0.5, 0.0, 0.0]), np.array([True, True, False]), token_steps([3], 4, 5))
  np.testing.assert_array_equal(got, [0.5, 0.5, 0.5, 0.5, 0])


def _rollout(problems, texts):
  tk = TASK.tokenizer
  t = TASK.max_response_len
  g = len(texts[0])
  tokens = np.full((len(problems), g, t), tk.pad_id, np.int32)
  mask = np.zeros((len(problems), g, t), bool)
  for i, group in enumerate(texts):
    for j, text in enumerate(group):
      ids = tk.answer_ids(text)
      tokens[i, j, :len(ids)], mask[i, j, :len(ids)] = ids, True
  rewards = np.array([[TASK.reward(p, x) for x in group] for p, group in zip(problems, texts)], np.float32)
  prompt, prompt_valid = tk.encode_prompts([p.prompt for p in problems], TASK.prompt_width)
  return idf.Rollout(prompt, prompt_valid, tokens, np.zeros(tokens.shape, np.float32), mask, rewards, texts)


def test_oracle_judge_row_is_the_oracle_step_change(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  rng = np.random.default_rng(1)
  problems = eval_problems(TASK, 3)
  texts = [[TASK.demonstration(p, rng) for _ in range(2)] for p in problems]
  rollout = _rollout(problems, texts)
  values, cost = study_signals.judge_signals(graphdef, params, TASK, problems, rollout, ["oracle"],
                                             key=jax.random.key(0), temperature=1.0)
  assert set(values) == {"judge-oracle"} and cost["oracle_tokens"] == 0
  for i, p in enumerate(problems):
    for j, text in enumerate(texts[i]):
      ends = TASK.step_ends(text)
      s = [TASK.prefix_value(p, "")] + [TASK.prefix_value(p, text[:e]) for e in ends]
      want = step_change_per_token(np.array(s), np.ones(len(s), bool), token_steps(ends, len(text) + 1,
                                                                                  TASK.max_response_len))
      np.testing.assert_array_equal(values["judge-oracle"][i, j], want)
  with pytest.raises(ValueError, match="judges: unknown judge 'nope'; allowed: "):
    idf.IdentifyConfig(judges=("nope",))
  assert "judge-mc" in study_signals.signal_names(judges=("oracle", "mc"))
  assert "judge-mc" not in idf.signal_names()  # no judge rows unless chosen


@pytest.mark.slow  # a tiny study plus the mc judge's continuations (~40 s)
def test_every_chosen_judge_gets_a_row_in_a_tiny_study():
  graphdef, params = nnx.split(Decoder(model_preset("tiny"), rngs=nnx.Rngs(0)))
  config = idf.IdentifyConfig(prompts=2, rollouts=2, continuations=2, bootstrap=0, rollouts_from="chains",
                              judges=("oracle", "mc"))
  data = idf.run_study(graphdef, params, TASK, eval_problems(TASK, 2), config)
  assert list(data.signals)[-2:] == ["judge-oracle", "judge-mc"]
  for row in ("judge-oracle", "judge-mc"):
    v = data.signals[row]
    assert v.shape == data.rollout.mask.shape and np.all(v[~data.rollout.mask] == 0) and np.all((v >= 0) & (v <= 1))
  assert data.timings["mc_tokens"] > 0 and data.timings["oracle_tokens"] == 0


def test_the_study_can_prepare_trained_judges_on_its_own():
  """`tcred identify --judges prm` prepares a trained judge: the study passes the training layer's
  `prepare_trained` in the judges' context itself (a fresh interpreter importing only the identify package),
  without the RL loop."""
  import subprocess
  import sys
  code = ("import tcred.evaluation.identify, tcred.evaluation.identify.signals as s, tcred.training.judges as t; "
          "assert s.prepare_trained is t.prepare_trained; assert 'tcred.training.rl' not in __import__('sys').modules")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
