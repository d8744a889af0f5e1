"""The identifiability study (`tcred identify`): signals, ground truth, the whole pipeline on a tiny model."""

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred import cli, experiments
from tcred.evaluation import identify as idf
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.tasks import tokenizer as tok
from tcred.tasks.countdown import Countdown
from tcred.training.checkpoint import Checkpointer
from tcred.training.data import eval_problems
from tcred.training.optim import adamw
from tcred.training.step import TrainState


class FirstCharCountdown(Countdown):
  """Countdown prompts with a toy verifier a random policy can pass: the first character's code is even.

  Its oracle is exact: a prefix can still succeed iff it is empty or starts with an even character.
  """

  def reward(self, problem, response):
    return float(bool(response) and ord(response[0]) % 2 == 0)

  def prefix_value(self, problem, prefix):
    return float(not prefix or ord(prefix[0]) % 2 == 0)


# ------------------------------------------------------------------ the cross-rollout σ signal


def sigma_ref(info_gain, mask):
  """NumPy loops: σ_t = population std over rollouts of the running sum of IG (carried after the end)."""
  g, t = info_gain.shape
  c = np.zeros((g, t))
  for i in range(g):
    run = 0.0
    for s in range(t):
      if mask[i, s]:
        run += info_gain[i, s]
      c[i, s] = run
  sigma = np.array([np.std(c[:, s]) if mask[:, s].any() else 0.0 for s in range(t)])
  return np.where(mask, sigma[None], 0.0), sigma


def test_running_answer_sigma_matches_numpy_loops():
  rng = np.random.default_rng(0)
  lengths = np.array([5, 3, 7, 1])
  mask = np.arange(8)[None] < lengths[:, None]
  ig = rng.normal(size=(4, 8)).astype(np.float32)
  want, sigma = sigma_ref(ig, mask)
  for fn in (idf.running_answer_sigma, jax.jit(idf.running_answer_sigma)):
    np.testing.assert_allclose(fn(ig, mask), want, rtol=1e-5, atol=1e-6)
  # vmapped over prompts, as the study calls it
  batched = jax.vmap(idf.running_answer_sigma)(np.stack([ig, ig[::-1]]), np.stack([mask, mask[::-1]]))
  np.testing.assert_allclose(batched[1], want[::-1], rtol=1e-5, atol=1e-6)
  prev = np.concatenate([[0.0], sigma[:-1]])
  np.testing.assert_allclose(idf.running_answer_sigma_delta(ig, mask),
                             np.where(mask, np.abs(sigma - prev)[None], 0.0), rtol=1e-5, atol=1e-6)
  # a group of one rollout has no spread
  np.testing.assert_array_equal(idf.running_answer_sigma(ig[:1], mask[:1]), 0.0)


def test_signal_registry():
  names = idf.signal_names()
  for name in ("entropy", "neg-logp", "hsic-mi", "info-gain", "xroll-sigma", "early-position", "oracle-judge"):
    assert name in names
  with pytest.raises(ValueError, match="already registered"):
    idf.register_signal(idf.TokenSignal("entropy", "dup", lambda ctx: None))
  with pytest.raises(ValueError, match="allowed"):
    idf.get_signal("tree-sibling-gap")
  with pytest.raises(ValueError, match="unknown extra"):
    idf.register_signal(idf.TokenSignal("needs-nothing-real", "x", lambda ctx: None, needs_extras=("nope",)))


def test_config_validation():
  with pytest.raises(ValueError, match="delta"):
    idf.IdentifyConfig(delta=0.0)
  with pytest.raises(ValueError, match="continuations"):
    idf.IdentifyConfig(continuations=0)
  with pytest.raises(ValueError, match="prompts"):
    idf.IdentifyConfig(prompts=1)
  assert idf.IdentifyConfig(continuations=32).advantage_se_bound == pytest.approx(0.125)


def test_prefix_table_deduplicates_shared_prefixes():
  tokens = np.array([[[5, 6, 2, 0], [5, 7, 8, 2]]], np.int32)  # one prompt, two rollouts sharing "5"
  mask = tokens != 0
  rollout = idf.Rollout(np.zeros((1, 3), np.int32), np.ones((1, 3), bool), tokens, np.zeros((1, 2, 4)), mask,
                        np.zeros((1, 2)), [["", ""]])
  index, pairs = idf._prefix_table(rollout)
  # prefixes: (), (5,), (5, 6) and (5, 7), (5, 7, 8): five distinct
  assert len(pairs) == 5
  assert index[0, 0, 0] == index[0, 1, 0] and index[0, 0, 1] == index[0, 1, 1]
  assert index[0, 0, 2] != index[0, 1, 2] and index[0, 0, 3] == -1


# ------------------------------------------------------------------ the pipeline on a tiny random model


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
  graphdef, params = nnx.split(Decoder(model_preset("tiny"), rngs=nnx.Rngs(0)))
  task = FirstCharCountdown()
  config = idf.IdentifyConfig(prompts=3, rollouts=4, continuations=2, delta=0.25, bootstrap=20, skip_lost=False)
  problems = eval_problems(task, config.prompts)
  out = tmp_path_factory.mktemp("identify")
  return idf.write_study(graphdef, params, task, problems, config, out=out, name="toy",
                         meta={"command": "tcred identify toy", "policy": "tiny random"})


def test_skipping_lost_prefixes_changes_nothing_but_the_cost(tiny_study):
  data = tiny_study[0]
  graphdef, params = nnx.split(Decoder(model_preset("tiny"), rngs=nnx.Rngs(0)))
  rollout = data.rollout
  config = data.config
  full = idf.ground_truth(graphdef, params, FirstCharCountdown(), data.problems, rollout, config)
  skip = idf.ground_truth(graphdef, params, FirstCharCountdown(), data.problems, rollout,
                          dataclasses.replace(config, skip_lost=True))
  lost = full.oracle[..., :-1] == 0
  assert lost.any() and skip.unique_prefixes < full.unique_prefixes
  np.testing.assert_array_equal(full.values[..., :-1][lost], 0.0)
  np.testing.assert_array_equal(skip.values[..., :-1][lost], 0.0)
  np.testing.assert_array_equal(skip.fatal, full.fatal)


def test_ground_truth_is_consistent(tiny_study):
  data, _, _, _ = tiny_study
  r, truth = data.rollout, data.truth
  n, g, t = r.tokens.shape
  lengths = r.mask.sum(-1)
  assert (lengths > 0).all()
  for i in range(n):
    for j in range(g):
      length = lengths[i, j]
      v = truth.values[i, j]
      assert v[length] == r.rewards[i, j]  # V after the whole response is its reward
      assert np.isnan(v[length + 1:]).all() and np.isfinite(v[:length + 1]).all()
      assert set(np.unique(v[:length] * 2)) <= {0.0, 1.0, 2.0}  # K = 2 continuations
      # A telescopes: Σ_t A_t = reward − V(empty prefix)
      assert truth.advantages[i, j].sum() == pytest.approx(r.rewards[i, j] - v[0])
      # the oracle is exact: a lost prefix has value 0 under every continuation
      lost = truth.oracle[i, j, :length] == 0
      assert (v[:length][lost] == 0).all()
      # prefix values never increase, so at most one token is fatal: the first character if odd, or
      # the last token of a response that ends without a correct answer (here: cut off by the budget)
      o = truth.oracle[i, j, :length + 1]
      assert (np.diff(o) <= 0).all() and truth.fatal[i, j].sum() <= 1
      for pos in np.flatnonzero(truth.fatal[i, j]):
        first = tok.decode(r.tokens[i, j, :pos + 1])[:1]
        assert (first and ord(first) % 2 == 1) or (pos == length - 1 and r.rewards[i, j] == 0)
  np.testing.assert_array_equal(truth.advantages[~r.mask], 0.0)
  assert (truth.advantage_se <= math.sqrt(0.5 / 2) + 1e-9).all()


def test_signals_use_the_training_functions(tiny_study):
  data, _, _, _ = tiny_study
  r = data.rollout
  assert set(data.signals) == set(idf.signal_names())
  for name, s in data.signals.items():
    assert s.shape == r.mask.shape and np.isfinite(s).all(), name
    np.testing.assert_array_equal(s[~r.mask], 0.0)
  # the train step's forward gives the sampler's behaviour log-probs for the sampled tokens
  np.testing.assert_allclose(-data.signals["neg-logp"][r.mask], r.logp[r.mask], rtol=1e-4, atol=1e-4)
  assert (data.signals["entropy"][r.mask] > 0).all()
  np.testing.assert_array_equal(data.signals["info-gain"], np.abs(data.extras["info_gain"]))
  oj = data.signals["oracle-judge"]
  np.testing.assert_array_equal(oj[r.mask] == 1, data.truth.fatal[r.mask])


def test_results_are_finite_and_in_range(tiny_study):
  data, results, _, _ = tiny_study
  assert 0 < results.decisive_rate < 1 and 0 < results.fatal_rate < 1
  for name, score in results.scores.items():
    for metric in ("auroc_decisive", "auroc_fatal", "precision_top", "auroc_decisive_reasoning",
                   "auroc_decisive_same_position"):
      v = score.values[metric]
      if metric != "auroc_decisive" and metric != "auroc_fatal" and metric != "precision_top" and math.isnan(v):
        continue  # few tokens: the reasoning tokens / a position may hold one class only
      assert math.isfinite(v) and 0.0 <= v <= 1.0, (name, metric, v)
      lo, hi = score.ci[metric]
      assert 0.0 <= lo <= hi <= 1.0, (name, metric, lo, hi)
    rho = score.values["spearman_abs_adv"]
    assert math.isnan(rho) or -1.0 <= rho <= 1.0
  assert results.scores["oracle-judge"].values["auroc_fatal"] == 1.0
  assert results.scores["early-position"].values["auroc_decisive_same_position"] == 0.5
  o = results.overlap
  assert 0.0 <= o.jaccard_top <= 1.0 and -1.0 <= o.spearman <= 1.0 and 0.0 <= o.peak_fraction < 1.0


def test_report_structure(tiny_study):
  data, results, md, png = tiny_study
  text = md.read_text()
  for heading in ("# Identifiability of reasoning tokens", "## Settings", "## Signals", "## Results",
                  "## High-entropy tokens vs MI peaks", "## Summary"):
    assert heading in text
  assert "tcred identify toy" in text and "Wall time" in text and "Machine" in text
  assert f"K = {data.config.continuations}" in text and "sqrt(1/(2K)) = 0.500" in text
  table = [line for line in text.splitlines() if line.startswith("| ") and "[" in line]
  assert len(table) == len(idf.signal_names())
  for line in table:
    cells = re.split(r"(?<!\\)\|", line)[2:-1]
    assert len(cells) == len(idf.METRICS), line  # escaped pipes do not split cells
  assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ the CLI


def _tiny_run_dir(tmp_path, task="countdown"):
  """A run directory of a random tiny policy, as `tcred run` leaves it (config.json + checkpoints/)."""
  cfg = experiments.get_experiment(f"{task}-grpo")
  cfg = cfg.with_overrides([f"model.{k}={v}" for k, v in model_preset("tiny").__dict__.items()
                            if k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "max_position_embeddings")])
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "seed": 0}))
  graphdef, params = nnx.split(Decoder(cfg.model, rngs=nnx.Rngs(1)))
  tx = adamw(cfg.rl.lr, warmup=cfg.rl.warmup, weight_decay=cfg.rl.weight_decay, max_grad_norm=cfg.rl.max_grad_norm)
  ckpt = Checkpointer(run / "checkpoints")
  ckpt.save(7, TrainState(params, tx.init(params), jnp.int32(7)), {"wall_s": 0.0})
  ckpt.close()
  return run


def test_cli_identify_on_a_run_directory(tmp_path, capsys):
  run = _tiny_run_dir(tmp_path)
  out = tmp_path / "out"
  assert cli.main(["identify", "countdown", "--policy", str(run), "--prompts", "3", "--rollouts", "4",
                   "--continuations", "2", "--bootstrap", "5", "--out", str(out), "--no-progress"]) == 0
  text = (out / "identify-countdown.md").read_text()
  assert "checkpoint step 7" in text and (out / "identify-countdown.png").exists()
  assert "tcred identify countdown --policy" in text


def test_cli_identify_usage_errors(tmp_path, capsys):
  assert cli.main(["identify", "no-such-task"]) == 2
  assert "allowed: countdown" in capsys.readouterr().err
  assert cli.main(["identify", "countdown", "--delta", "1.5"]) == 2
  assert "delta must be in (0, 1]" in capsys.readouterr().err
  assert cli.main(["identify", "countdown", "--continuations", "0"]) == 2
  assert "continuations" in capsys.readouterr().err
  assert cli.main(["identify", "countdown", "--policy", str(tmp_path / "missing")]) == 2
  assert "allowed values are 'base' or a run directory" in capsys.readouterr().err
  run = _tiny_run_dir(tmp_path)
  assert cli.main(["identify", "graph-path", "--policy", str(run)]) == 2
  assert "is a run of task 'countdown'" in capsys.readouterr().err
  assert cli.main(["identify", "countdown", "--policy", str(run), "--prompts", "100000"]) == 2
  assert "--prompts must be <=" in capsys.readouterr().err
