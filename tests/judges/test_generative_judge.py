"""The generative step judge: settings, data, training by SFT + GRPO, saving, loading, scoring."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from tcred.judges import JudgeContext, judge_names, make_judge
from tcred.judges.generative import (LoadedGenerativeJudge, examples_from_rollouts, first_step_prior, judge_steps,
                                     teacher_labelled)
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.tasks import step_judge
from tcred.tasks import tokenizer as char
from tcred.judges.trained import TrainJob
from tcred.tasks.registry import make_task
from tcred.training import generative_judge
from tcred.training.judges import judge_trainer

TINY = dict(size="tiny", sft_steps=2, sft_batch_size=8, grpo_steps=1, grpo_prompts=4, grpo_group=2)


def _data(n=12, seed=0):
  task = make_task("countdown", demo_correct_prob=0.5)
  rng = np.random.default_rng(seed)
  problems = [task.sample(rng) for _ in range(n)]
  return task, teacher_labelled(task, problems, [task.demonstration(p, rng) for p in problems])


def test_registered_with_its_trainer():
  assert "generative" in judge_names()
  assert judge_trainer("generative").train is generative_judge.train


@pytest.mark.parametrize("setting, value, message", [
    ("size", "huge", "allowed: tiny, char-small, policy"),
    ("verdicts", "mc", "allowed: label, teacher"),
    ("rule", "abs", "allowed: \\['abs-q', 'rel-ratio', 'rel-effective'\\]"),
    ("labels", 0, "judge.labels must be an integer >= 1"),
    ("sft_steps", 0, "judge.sft_steps must be an integer >= 1"),
    ("grpo_steps", -1, "judge.grpo_steps must be an integer >= 0"),
    ("samples", 0, "judge.samples must be an integer >= 1"),
    ("grpo_group", 1, "judge.grpo_group must be an integer >= 2"),
    ("sft_lr", 0.0, "judge.sft_lr must be a positive number"),
])
def test_bad_settings_name_what_is_allowed(setting, value, message):
  with pytest.raises(ValueError, match=message):
    make_judge("generative", **{setting: value})


def test_unknown_setting_and_task_without_teacher():
  with pytest.raises(ValueError, match="allowed: .*'grpo_steps'"):
    make_judge("generative", steps=3)
  with pytest.raises(ValueError, match="task 'jsonl' has none.*allowed: tasks with a teacher"):
    make_judge("generative").check_task(make_task("jsonl"))


def test_data_follows_the_labels_and_the_prior():
  task, data = _data()
  examples = examples_from_rollouts(task, data)
  assert len(examples) == int(data.label_valid.sum())
  assert [e.label for e in examples] == data.labels[data.label_valid].tolist()
  assert all(e.label == e.teacher for e in examples)  # teacher labels: the verdict is the teacher's
  first = data.labels[:, 0]
  assert first_step_prior(data) == pytest.approx(first.mean())
  cut = data._replace(label_valid=data.label_valid & (np.arange(data.labels.shape[1]) < 1))
  assert len(examples_from_rollouts(task, cut)) == len(data.problems)  # only the labelled (first) steps


def test_trains_saves_loads_and_scores(tmp_path):
  """SFT 2 steps + GRPO 1 step of a tiny judge; its files; a second call finds it trained; the loaded judge
  scores every step of every response, s_0 = the prior."""
  task, data = _data()
  judge = make_judge("generative", **TINY)
  logged = []
  job = TrainJob(judge, task, None, data, tmp_path, lambda step, m: logged.append((step, m)), False)
  cost = generative_judge.train(job)
  assert [s for s, _ in logged] == [1, 2, 3]
  assert "judge/sft_loss" in logged[1][1] and "judge/grpo_reward" in logged[2][1]
  assert (tmp_path / "weights-sft" / "0").is_dir() and (tmp_path / "weights" / "0").is_dir()
  assert cost["tokens"] == logged[-1][1]["judge/tokens"] > 0
  info = json.loads((tmp_path / generative_judge.INFO_FILE).read_text())
  assert info["examples"] == int(data.label_valid.sum()) and info["model"]["hidden_size"] == 32
  logged.clear()
  generative_judge.train(job)  # everything is checkpointed: nothing to redo
  assert logged == []
  loaded = judge_trainer("generative").load(judge, task, tmp_path, None)
  problems, responses = data.problems[:2], [data.responses[:3], data.responses[3:4]]
  ctx = JudgeContext(None, None, jax.random.key(0), 1.0)
  scores = loaded.score_groups(task, problems, responses, ctx)
  steps = [[len(task.step_ends(r)) for r in row] for row in responses]
  assert scores.scores.shape == (2, 3, max(max(r) for r in steps) + 1)
  for b, row in enumerate(steps):
    for g, k in enumerate(row):
      assert scores.valid[b, g].tolist() == [True] * (k + 1) + [False] * (scores.valid.shape[2] - k - 1)
  assert np.all(scores.scores[scores.valid] >= 0) and np.all(scores.scores[scores.valid] <= 1)
  assert np.allclose(scores.scores[:, :, 0][scores.valid[:, :, 0]], info["prior"])
  assert scores.tokens > 0


@pytest.mark.slow
def test_training_resumes_after_an_interruption(tmp_path):
  """Interrupted while logging step 3 (the checkpoint of step 2 written, step 3 not saved), a restart trains
  steps 3, 4, 5 only and ends with the weights of an uninterrupted run."""
  task, data = _data()
  judge = make_judge("generative", **{**TINY, "sft_steps": 3, "grpo_steps": 2, "checkpoint_every": 2})

  def stop_at_3(step, m):
    if step == 3:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    generative_judge.train(TrainJob(judge, task, None, data, tmp_path / "a", stop_at_3, False))
  logged = []
  generative_judge.train(TrainJob(judge, task, None, data, tmp_path / "a", lambda s, m: logged.append(s), False))
  assert logged == [3, 4, 5]
  generative_judge.train(TrainJob(judge, task, None, data, tmp_path / "b", lambda *_: None, False))
  a, b = (generative_judge.load_weights(tmp_path / d)[1] for d in "ab")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_sft_teaches_analyses_and_verdicts(tmp_path):
  """After 150 SFT steps on teacher analyses (teacher labels) the tiny judge writes verdicts and its greedy
  verdicts beat the majority-class rate on its training steps; with `samples` = 3 a score is a fraction of 3."""
  task, data = _data(n=60)
  judge = make_judge("generative", **{**TINY, "sft_steps": 150, "grpo_steps": 0, "sft_batch_size": 32})
  generative_judge.train(TrainJob(judge, task, None, data, tmp_path, lambda *_: None, False))
  loaded = generative_judge.load(judge, task, tmp_path)
  examples = examples_from_rollouts(task, data)
  scores, texts, _ = judge_steps(loaded.graphdef, loaded.params, [e.prompt for e in examples], jax.random.key(0),
                                 max_new_tokens=loaded.max_new_tokens, samples=1)
  labels = np.array([e.label for e in examples])
  assert np.mean([t.endswith(("@+", "@-")) for t in texts]) > 0.75  # measured 0.85
  assert np.mean((scores > 0.5) == labels) > max(labels.mean(), 1 - labels.mean())
  sampled, _, _ = judge_steps(loaded.graphdef, loaded.params, [e.prompt for e in examples[:16]], jax.random.key(1),
                              max_new_tokens=loaded.max_new_tokens, samples=3)
  assert set(np.round(sampled * 3, 6)) <= {0.0, 1.0, 2.0, 3.0, 1.5}  # 1.5: an undecided 0.5


def test_scores_a_response_whose_ids_leave_the_vocabulary():
  """A policy id of the unused range decodes to U+FFFD, which has no id to re-encode: the judge prompts are
  built from the response's own ids (`ctx.response_ids`), in the same layout as `judge_prompt`."""
  task = make_task("countdown")
  problem = task.sample(np.random.default_rng(0))
  tk = task.tokenizer
  unused = char.NUM_REAL_TOKENS  # the first id outside the character vocabulary
  good = np.concatenate([tk.encode("3+5=8,8*2=9"), [tk.eos_id]]).astype(np.int32)  # as long as odd: one width
  odd = np.concatenate([tk.encode("3+5=8,"), [unused], tk.encode("*2=9"), [tk.eos_id]]).astype(np.int32)
  texts = [tk.decode(good), tk.decode(odd)]
  assert "\ufffd" in texts[1]
  with pytest.raises(ValueError):
    tk.encode(texts[1])  # what the text-built prompt used to do
  # The ids prompt has the text prompt's layout: for an in-vocabulary response they are equal.
  spans = step_judge.step_spans(task, texts[0])
  for s, e in spans:
    np.testing.assert_array_equal(step_judge.judge_prompt_ids(problem, good, s, e),
                                  tk.encode(step_judge.judge_prompt(problem, texts[0], s, e)))
  s, e = step_judge.step_spans(task, texts[1])[1]
  assert unused in step_judge.judge_prompt_ids(problem, odd[:-1], s, e)

  # Random weights drawn by numpy on the decoder's abstract state (nnx's own init costs seconds of compiling).
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(model_preset("tiny"), rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (rng.normal(size=x.shape) * 0.5).astype(x.dtype), abstract)
  judge = LoadedGenerativeJudge(settings=make_judge("generative", size="tiny"), graphdef=graphdef, params=params,
                                max_new_tokens=2, prior_score=0.25)
  ctx = JudgeContext(None, None, jax.random.key(0), 1.0, response_ids=[[good, odd]])
  out = judge.score_groups(task, [problem], [texts], ctx)
  k = [len(task.step_ends(t)) for t in texts]
  assert out.valid[0].sum(-1).tolist() == [k[0] + 1, k[1] + 1]
  assert np.all((out.scores[0][out.valid[0]] >= 0) & (out.scores[0][out.valid[0]] <= 1))
  assert out.scores[0, 0, 0] == out.scores[0, 1, 0] == 0.25  # s_0 is the prior
  # Built from ids or from the text, the in-vocabulary response is scored alike (one layout).
  alone = judge.score_groups(task, [problem], [texts[:1]], ctx._replace(response_ids=None))
  np.testing.assert_allclose(alone.scores[0, 0, :k[0] + 1], out.scores[0, 0, :k[0] + 1], rtol=1e-6)


def test_training_examples_leave_out_responses_with_ids_outside_the_vocabulary():
  """A response holding an unused id (decoded as U+FFFD) cannot be a text prompt: its rollout gives no training
  example (identify long-addition's generative judge once failed on one), the others are kept."""
  from tcred.judges.generative import teacher_labelled
  task = make_task("countdown")
  rng = np.random.default_rng(0)
  problems = [task.sample(rng) for _ in range(3)]
  responses = [p.solution for p in problems]
  data = teacher_labelled(task, problems, responses)
  full = examples_from_rollouts(task, data)
  per = [len(examples_from_rollouts(task, data._replace(problems=[p], responses=[r], q=data.q[i:i + 1],
                                                         labels=data.labels[i:i + 1],
                                                         label_valid=data.label_valid[i:i + 1])))
         for i, (p, r) in enumerate(zip(problems, responses))]
  assert len(full) == sum(per) and per[1] > 0
  odd = list(responses)
  odd[1] = odd[1][:2] + "\ufffd" + odd[1][3:]
  kept = examples_from_rollouts(task, data._replace(responses=odd))
  assert len(kept) == per[0] + per[2]
  for ex in kept:
    task.tokenizer.encode(ex.prompt)  # every kept prompt encodes
