"""The forking ground truth at positions and the several-base study, on hand-made policies whose decisive
positions are known."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.evaluation import identify as idf
from tcred.evaluation.identify import report
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.sampling.rollout import encode_prompts
from tcred.tasks.countdown import Countdown
from tcred.training.data import eval_problems

EOS, ONE, TWO = 2, 20, 21  # the character tokenizer's EOS, '1' (odd code: wrong), '2' (even code: right)


class FirstCharCountdown(Countdown):
  """Reward 1 iff the response's first character has an even code (decided by the first token only)."""

  def reward(self, problem, response):
    return float(bool(response) and ord(response[0]) % 2 == 0)

  def prefix_value(self, problem, prefix):
    return float(not prefix or ord(prefix[0]) % 2 == 0)


def fixed_policy(probs: dict[int, float], seed: int = 0):
  """A decoder whose next-token distribution is `probs` after any prefix (every other token ≈ 0).

  All token embeddings are one vector e and every layer adds nothing (zero output projections), so the
  final hidden state after any prefix is RMSNorm(e) = e / sqrt(mean(e²) + eps); the head maps it to the
  chosen logits.
  """
  model = Decoder(model_preset("tiny", tie_word_embeddings=False), rngs=nnx.Rngs(seed))
  v, d = model.embed_tokens.embedding[...].shape
  e = np.random.default_rng(seed).normal(size=d).astype(np.float32)
  model.embed_tokens.embedding[...] = jnp.asarray(np.tile(e, (v, 1)))
  for layer in model.layers:
    layer.self_attn.o_proj.kernel[...] = jnp.zeros_like(layer.self_attn.o_proj.kernel[...])
    layer.mlp.down_proj.kernel[...] = jnp.zeros_like(layer.mlp.down_proj.kernel[...])
  h = e.astype(np.float64) / np.sqrt(np.mean(e.astype(np.float64) ** 2) + model.config.rms_norm_eps)
  logits = np.full(v, -30.0)
  for token, p in probs.items():
    logits[token] = math.log(p)
  model.lm_head.kernel[...] = jnp.asarray(np.outer(h, logits) / (h @ h), jnp.float32)
  return nnx.split(model)


Q_A = {EOS: 0.4, TWO: 0.35, ONE: 0.25}
Q_B = {TWO: 0.45, EOS: 0.35, ONE: 0.2}


def hand_rollout(task, problems, responses):
  """A `Rollout` of the given response token lists (EOS included), G per prompt, without sampling."""
  prompt, prompt_valid = encode_prompts(task, problems)
  n, g, t = len(problems), len(responses[0]), task.max_response_len
  tokens = np.zeros((n, g, t), np.int32)
  mask = np.zeros((n, g, t), bool)
  rewards = np.zeros((n, g))
  texts = []
  for i in range(n):
    texts.append([])
    for j, ids in enumerate(responses[i]):
      tokens[i, j, :len(ids)] = ids
      mask[i, j, :len(ids)] = True
      text = task.tokenizer.decode(np.asarray(ids[:-1]))
      rewards[i, j] = task.reward(problems[i], text)
      texts[i].append(text)
  return idf.Rollout(prompt, prompt_valid, tokens, np.zeros((n, g, t), np.float32), mask, rewards, texts)


def test_forking_truth_finds_the_known_decisive_positions():
  """Under a fixed policy on a task decided by the first character, only position 0 is decisive: its
  alternatives EOS (empty response: 0), '2' (≈ 1) and '1' (0) spread by ≈ 1; later alternatives cannot
  change the first character (spread 0, up to a budget overrun of probability ≤ 0.6^20)."""
  task = FirstCharCountdown()
  problems = eval_problems(task, 2)
  responses = [[[TWO, EOS], [ONE, TWO, EOS], [TWO, ONE, TWO, EOS]], [[EOS], [ONE, EOS], [TWO, TWO, EOS]]]
  rollout = hand_rollout(task, problems, responses)
  config = idf.IdentifyConfig(prompts=2, rollouts=3, continuations=4, delta=0.5, fork_positions=8, rollouts_from="chains")
  f = idf.forking_truth(*fixed_policy(Q_A), task, problems, rollout, config)
  assert len(f.position) == rollout.mask.sum()  # 8 per rollout: every valid position
  assert [(i, j, t) for i, j, t in zip(f.prompt, f.rollout, f.position)] == [
      (i, j, t) for i in range(2) for j in range(3) for t in range(len(responses[i][j]))]
  order = [EOS, TWO, ONE]  # by probability under Q_A
  np.testing.assert_array_equal(f.alternatives, np.tile(order, (len(f.position), 1)))
  np.testing.assert_allclose(f.probs, np.tile([Q_A[t] for t in order], (len(f.position), 1)), rtol=1e-4)
  first_right = (rollout.tokens[f.prompt, f.rollout, 0] == TWO).astype(float)
  at0 = f.position == 0
  np.testing.assert_array_equal(f.values[at0], np.tile([0.0, 1.0, 0.0], (at0.sum(), 1)))
  np.testing.assert_array_equal(f.values[~at0], np.tile(first_right[~at0, None], (1, 3)))
  np.testing.assert_array_equal(f.spread >= config.delta, at0)
  # the empty prefix of a prompt is continued once per non-stop alternative, not once per rollout; a stop
  # alternative is never continued
  distinct = {(int(i), tuple(rollout.tokens[i, j, :t]) + (a,)) for i, j, t in zip(f.prompt, f.rollout, f.position)
              for a in (TWO, ONE)}
  assert f.continued == len(distinct) < 2 * len(f.position)
  assert f.continuations == 4 and f.tokens > 0


@pytest.fixture(scope="module")
def two_bases():
  """The same study on two hand-made "bases" (fixed policies), every position of every rollout forked."""
  task = FirstCharCountdown()
  config = idf.IdentifyConfig(prompts=2, rollouts=4, continuations=4, delta=0.5, bootstrap=20, rollouts_from="chains",
                              fork_positions=64, alternatives=3, bases=2)
  problems = eval_problems(task, config.prompts)
  studies = [idf.run_study(*fixed_policy(q, s), task, problems, config,
                           signals=["entropy", "surprisal", "early-position"])
             for s, q in enumerate((Q_A, Q_B))]
  return studies, idf.pool_studies(studies)


@pytest.mark.slow  # ~15 s quiet (two sampled studies: sampler, Monte-Carlo and fork compilations)
def test_sampled_studies_fork_where_the_first_character_is_chosen(two_bases):
  studies, _ = two_bases
  for study in studies:
    f = study.forking
    assert len(f.position) == study.rollout.mask.sum()
    np.testing.assert_array_equal(f.spread >= study.config.delta, f.position == 0)


@pytest.mark.slow
def test_forking_metrics_and_the_pooled_bases(two_bases):
  studies, data = two_bases
  assert data.bases == 2 and len(data.problems) == 4 and list(data.base) == [0, 0, 1, 1]
  assert data.rollout.tokens.shape[0] == 4 and data.forking.prompt.max() == 3
  np.testing.assert_array_equal(data.forking.spread, np.concatenate([s.forking.spread for s in studies]))
  results = idf.evaluate_study(data)
  assert results.bases == 2
  f = results.forking
  assert f.positions == len(data.forking.position) and 0 < f.decisive_rate < 1
  # position 0 is the only decisive position: −t ranks it first; the bound row (every p ≤ 1 − δ) is constant
  assert f.scores["early-position"].values["auroc_decisive"] == 1.0
  assert f.scores[idf.BOUND_ROW].values["auroc_decisive"] == 0.5
  assert f.scores["early-position"].values["auroc_minus_bound"] == 0.5
  assert math.isnan(f.scores["early-position"].values["auroc_decisive_same_position"])  # one class per position
  lo, hi = f.scores["early-position"].ci["auroc_decisive"]
  assert lo == hi == 1.0
  # the token study's noise floor: every sampled p ≤ 0.5 < 1 − δ, so no decisive label breaks the bound
  assert results.noise.can_decide == 1.0 and results.noise.violating == 0.0
  text = report.markdown_report(data, results, {"command": "tcred identify toy", "policy": "two fixed policies",
                                                "wall_s": 0.0, "machine": "test"})
  assert "two-level cluster bootstrap (the 2 SFT bases resampled" in text and "**Bases**: 2 SFT bases" in text
  assert "## Forking ground truth at positions" in text and "| early-position | 1.000 [1.00, 1.00]" in text
  assert "2 held-out prompts" in text


@pytest.mark.slow
def test_choosing_k_stops_when_the_bound_holds(two_bases):
  """`auto_continuations` doubles K while the bound-violating share is above the target: a policy that is
  almost sure of its token (p > 1 − δ) yet gets noisy values needs more continuations."""
  studies, _ = two_bases
  data = studies[0]
  lost_free = data.config.__class__(**{**data.config.__dict__, "auto_continuations": True, "max_continuations": 16,
                                       "fork_positions": 0})
  # every token may be decisive (p ≤ 1 − δ): the share is 0 at once, K stays
  truth = idf.ground_truth(*fixed_policy(Q_A), FirstCharCountdown(), data.problems, data.rollout, lost_free,
                           can_decide=data.rollout.mask)
  assert truth.continuations == 4 and truth.continuation_steps == ((4, 0.0),)
  # no token may be decisive: every decisive label breaks the bound; K doubles up to the cap
  truth = idf.ground_truth(*fixed_policy(Q_A), FirstCharCountdown(), data.problems, data.rollout, lost_free,
                           can_decide=np.zeros_like(data.rollout.mask))
  shares = dict(truth.continuation_steps)
  assert truth.continuations == 16 and list(shares) == [4, 8, 16] and shares[4] == 1.0
  assert (np.abs(truth.advantages) <= 1).all()


@pytest.mark.slow  # a whole two-base `identify` on random policies (~1 min loaded)
def test_identify_builds_one_base_per_sft_seed_and_pools_them(tmp_path, monkeypatch):
  from tcred.evaluation.identify import io

  seeds = []

  def fake_base_policy(model_config, task, task_config, sft, *, eval_prompts, progress=False):
    seeds.append(sft.seed)  # the base cache key hashes the whole SFT config, seed included
    graphdef, params = nnx.split(Decoder(model_preset("tiny"), rngs=nnx.Rngs(sft.seed)))
    return graphdef, params, tmp_path / f"base-{sft.seed}"

  monkeypatch.setattr(io, "base_policy", fake_base_policy)
  config = idf.IdentifyConfig(prompts=2, rollouts=2, continuations=2, bases=2, rollouts_from="chains", bootstrap=5,
                              fork_positions=1, replicas=True)
  data, results, md, _ = idf.identify("countdown", config=config, out=tmp_path / "out")
  assert seeds == [0, 1] and results.bases == 2 and data.bases == 2
  assert list(data.base) == [0, 0, 1, 1] and data.problems[:2] == data.problems[2:]  # the same prompts per base
  assert results.noise.replica and results.forking.positions == data.rollout.mask.any(-1).sum()
  text = md.read_text()
  assert "sft.seed = 0" in text and "sft.seed = 1" in text and "two-level cluster bootstrap" in text
  assert "replica agreement at K = 2" in text and "of base 0" in text
