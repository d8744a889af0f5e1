"""The `prm` judge's settings, inputs, the trainer table and how a trained judge is prepared (training end to end: tests/training/test_judge_cli.py)."""

import numpy as np
import pytest

from tcred.judges import make_judge
from tcred.judges.prm import encode_steps
from tcred.judges import JudgeContext
from tcred.judges.trained import JudgeTrainer
from tcred.tasks.registry import make_task
from tcred.training import generative_judge
from tcred.training import judges as training_judges
from tcred.training.judges import (TRAINERS, judge_trainer, prepare_trained, register_judge_trainer,
                                   trainable_judges)


def test_encode_steps_reads_each_step_at_its_last_token():
  task = make_task("countdown")
  problem = task.make_problem((2, 3, 5), 25)
  responses = ["2+3=5,5*5=25#25", "2*3=6#6"]
  tokens, valid, step_pos, step_valid = encode_steps(task, [problem, problem], responses)
  p = 1 + len(problem.prompt)  # BOS + prompt
  # Step ends (characters) [5, 12, 15] and [5, 7]: read at characters 4, 11, 14 and 4, 6 of the response.
  np.testing.assert_array_equal(step_pos, [[p + 4, p + 11, p + 14], [p + 5 - 1, p + 6, 0]])
  np.testing.assert_array_equal(step_valid, [[True, True, True], [True, True, False]])
  assert [task.tokenizer.decode(tokens[0, k:k + 1]) for k in step_pos[0]] == \
      ["5", "5", "5"]  # the last character of "2+3=5", ",5*5=25" and "#25"
  assert valid[0].sum() == p + len(responses[0]) and valid[1].sum() == p + len(responses[1])
  assert tokens.shape == (2, task.prompt_width + task.max_response_len)


@pytest.mark.parametrize("kw, message", [
    (dict(hidden_size=0), "judge.hidden_size must be a positive integer"),
    (dict(labels=0), "judge.labels must be an integer >= 1"),
    (dict(continuations=1.5), "judge.continuations must be an integer >= 1"),
    (dict(rule="best"), "unknown label rule 'best'; allowed: \\['abs-q', 'rel-ratio', 'rel-effective'\\]"),
    (dict(learning_rate=-1.0), "judge.learning_rate must be a positive number"),
])
def test_bad_prm_settings_name_the_field_and_what_is_allowed(kw, message):
  with pytest.raises(ValueError, match=message):
    make_judge("prm", **kw)


def test_the_trainer_table_lists_the_trainable_kinds_and_refuses_duplicates():
  assert trainable_judges() == ["generative", "prm"] and set(TRAINERS) == {"generative", "prm"}
  assert TRAINERS["generative"].load is generative_judge.load  # wired in one table, not by an import's side effect
  with pytest.raises(ValueError, match=r"judge 'mc' is not trained \(no trainer\); trainable judges: \[.*'prm'"):
    judge_trainer("mc")
  with pytest.raises(ValueError, match="judge 'prm' already has a trainer"):
    register_judge_trainer("prm", JudgeTrainer(train=lambda job: {}, load=lambda *a: None))
  with pytest.raises(TypeError, match="needs a JudgeTrainer"):
    register_judge_trainer("other", (lambda job: {}, lambda *a: None))


def test_a_trained_judge_is_prepared_by_the_function_its_context_carries():
  import jax

  task, judge = make_task("countdown"), make_judge("prm")
  ctx = JudgeContext(None, None, jax.random.key(0), 1.0)
  with pytest.raises(RuntimeError, match="build its JudgeContext with prepare_trained=tcred.training.judges"):
    judge.prepare(task, ctx)
  calls = []
  ready = judge.prepare(task, ctx._replace(prepare_trained=lambda *a: calls.append(a) or "ready"))
  assert ready == "ready" and calls[0][:2] == (judge, task) and calls[0][2].prepare_trained is not None
  assert make_judge("mc").prepare(task, ctx) is not None  # a judge without weights never reads it
  assert callable(prepare_trained)


def test_an_untrained_prm_refuses_to_score():
  task = make_task("countdown")
  judge = make_judge("prm")
  with pytest.raises(RuntimeError, match="call prepare"):
    judge.scores_with_prior(task, task.make_problem((2, 3, 5), 25), "2+3=5#5")


def test_a_prm_started_from_the_policy_holds_its_trunk_weights():
  from flax import nnx

  from tcred.judges.prm import PRM
  from tcred.models.config import model_preset
  from tcred.models.decoder import Decoder

  config = model_preset("tiny")
  _, params = nnx.split(Decoder(config, rngs=nnx.Rngs(0)))
  judge = make_judge("prm", init="policy")
  model = PRM(judge.model_config(config), rngs=nnx.Rngs(1))
  assert judge.model_config(config) == config  # the policy's architecture
  training_judges._start_from_policy(model, params)
  policy = dict(nnx.to_flat_state(params))
  trunk = dict(nnx.to_flat_state(nnx.state(model.trunk)))
  assert set(policy) - set(trunk) == {("lm_head", "kernel")} or set(policy) == set(trunk)
  for path, var in trunk.items():
    np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(policy[path].get_value()))
  with pytest.raises(ValueError, match="unknown judge.init 'pretrained'; allowed: policy, scratch"):
    make_judge("prm", init="pretrained")
