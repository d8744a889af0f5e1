"""The change study (`tcred identify --changes`) on hand-made policies whose changed positions are known, the
distribution-change head against NumPy, and the study across training (`tcred identify --steps`): its checks of
run directories and steps, and (slow) both commands end to end on tiny runs."""

import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred import cli, experiments
from tcred.evaluation import identify as idf
from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify import changes as ch
from tcred.evaluation.identify import training as tr
from tcred.evaluation.identify.rollouts import Rollout
from tcred.evaluation.identify.study import StudyData
from tcred.models.config import model_preset
from tcred.models.logprobs import token_distribution_change
from tcred.training.checkpoint import Checkpointer
from tcred.training.optim import adamw
from tcred.training.step import TrainState

from tests.evaluation.test_identify_forking import EOS, ONE, TWO, fixed_policy


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_distribution_change_matches_numpy():
  rng = np.random.default_rng(0)
  b, t, d_p, d_q, v = 3, 5, 4, 6, 11
  hp, hq = rng.normal(size=(b, t, d_p)), rng.normal(size=(b, t, d_q))
  up, uq = rng.normal(size=(d_p, v)), rng.normal(size=(d_q, v))
  y = rng.integers(0, v, size=(b, t))
  tau = 0.7
  lp, lq = _log_softmax(hp @ up / tau), _log_softmax(hq @ uq / tau)
  want = (np.take_along_axis(lp, y[..., None], -1)[..., 0], np.take_along_axis(lq, y[..., None], -1)[..., 0],
          (np.exp(lp) * (lp - lq)).sum(-1), (lp.argmax(-1) != lq.argmax(-1)).astype(float))
  for chunk in (4, 64):  # 15 tokens: padded to a multiple of 4, one block of 64
    got = token_distribution_change(*(jnp.asarray(x, jnp.float32) for x in (hp, up, hq, uq)), jnp.asarray(y),
                                    temperature=tau, chunk_size=chunk)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5)
  same = token_distribution_change(*(jnp.asarray(x, jnp.float32) for x in (hp, up, hp, up)), jnp.asarray(y),
                                   temperature=tau)
  assert np.allclose(same[2], 0.0, atol=1e-6) and not np.asarray(same[3]).any()
  with pytest.raises(ValueError, match="different vocabularies: 11 and 12"):
    token_distribution_change(jnp.zeros((2, d_p)), jnp.zeros((d_p, v)), jnp.zeros((2, d_q)), jnp.zeros((d_q, 12)),
                              jnp.zeros(2, jnp.int32), temperature=1.0)


# The base's next-token distribution after any prefix, and two trained policies (fixed_policy: context-free).
BASE = {EOS: 0.3, ONE: 0.4, TWO: 0.3}
RUN_A = {EOS: 0.3, ONE: 0.6, TWO: 0.1}  # Δlog p: EOS 0, ONE ln 1.5 < ln 2, TWO ln(1/3): changed iff TWO
RUN_B = {EOS: 0.1, ONE: 0.6, TWO: 0.3}  # changed iff EOS
KL_A = sum(p * math.log(p / RUN_A[k]) for k, p in BASE.items())


def _hand_made_study(signals):
  """A StudyData of hand-made rollouts (tokens from {EOS, ONE, TWO}, EOS last) with the given rows."""
  tokens = np.array([[[ONE, TWO, ONE, EOS, 0, 0], [TWO, TWO, EOS, 0, 0, 0], [ONE, ONE, ONE, ONE, TWO, EOS]],
                     [[TWO, EOS, 0, 0, 0, 0], [ONE, TWO, ONE, TWO, EOS, 0], [ONE, EOS, 0, 0, 0, 0]]])
  mask = np.zeros(tokens.shape, bool)
  for i, j in np.ndindex(tokens.shape[:2]):
    mask[i, j, :list(tokens[i, j]).index(EOS) + 1] = True
  prompt = np.full((2, 3), 40)
  rollout = Rollout(prompt, np.ones_like(prompt, bool), tokens, np.zeros(tokens.shape), mask, np.zeros((2, 3)),
                    [[""] * 3] * 2)
  logp = np.where(mask, np.log(np.vectorize(lambda t: BASE.get(int(t), 1.0))(tokens)), 0.0)
  truth = types.SimpleNamespace(advantages=np.zeros(tokens.shape))
  config = idf.IdentifyConfig(prompts=2, rollouts=3, bootstrap=20, rollouts_from="chains")
  return StudyData("toy", "=", [None, None], config, rollout, truth,
                   {k: np.where(mask, v(tokens, mask), 0.0) for k, v in signals.items()},
                   {"logp": logp, "entropy": np.zeros(tokens.shape)}, {}, {})


def test_change_study_finds_the_known_changed_positions():
  base, run_a, run_b = fixed_policy(BASE), fixed_policy(RUN_A), fixed_policy(RUN_B)
  rng = np.random.default_rng(1)
  data = _hand_made_study({"is-two": lambda t, m: (t == TWO).astype(float),
                           "surprisal": lambda t, m: -np.log(np.vectorize(lambda x: BASE.get(int(x), 1.0))(t)),
                           "random": lambda t, m: rng.random(t.shape)})
  tokens, mask = data.rollout.tokens, data.rollout.mask
  delta, kl, flip = ch.policy_change(*base, *run_a, data, temperature=1.0, batch=2)
  want = np.vectorize(lambda x: math.log(RUN_A.get(int(x), 1.0) / BASE.get(int(x), 1.0)))(tokens)
  np.testing.assert_allclose(delta, np.where(mask, want, 0.0), atol=1e-4)
  np.testing.assert_allclose(kl, np.where(mask, KL_A, 0.0), atol=1e-4)
  assert not flip.any()  # ONE stays the most probable token
  change_a = ch.Change("A seed 0", "A", 0, delta, kl, flip)
  changed_a = ch.changed_mask(change_a, mask, "logp", ch.DEFAULT_THRESHOLD)
  assert (changed_a == (mask & (tokens == TWO))).all()
  assert (ch.changed_mask(change_a, mask, "kl", 0.1) == mask).all() and not ch.changed_mask(change_a, mask, "kl",
                                                                                               0.2).any()
  result = ch.evaluate_changes(data, changed_a, [change_a], measure="logp", threshold=ch.DEFAULT_THRESHOLD)
  n_two, n_one, n_eos = (int(((tokens == x) & mask).sum()) for x in (TWO, ONE, EOS))
  assert result.tokens == mask.sum() and result.changed_share == pytest.approx(n_two / mask.sum())
  s = result.scores
  assert s["is-two"].values["auroc_changed"] == 1.0 and s["is-two"].values["recall_top"] == pytest.approx(
      math.ceil(0.2 * mask.sum()) / n_two)  # the top 20% holds only changed positions (fewer than the changed)
  # surprisal ties TWO with EOS (both p = 0.3) and ranks both above ONE: AUROC from the counts
  assert s["surprisal"].values["auroc_changed"] == pytest.approx((n_one + 0.5 * n_eos) / (n_one + n_eos))
  assert s[idf.BOUND_ROW].values["auroc_changed"] == 0.5  # every token has p <= 1 − δ
  assert result.grid["argmax flipped"] == 0.0 and result.grid["KL ≥ 0.1"] == 1.0
  lo, hi = s["is-two"].ci["auroc_changed"]
  assert lo == hi == 1.0
  # a second run (same base, same rollouts) that changes other positions: disjoint changed sets
  change_b = ch.Change("B seed 0", "B", 0, *ch.policy_change(*base, *run_b, data, temperature=1.0, batch=2))
  changed_b = ch.changed_mask(change_b, mask, "logp", ch.DEFAULT_THRESHOLD)
  assert (changed_b == (mask & (tokens == EOS))).all()
  pairs = ch.pair_jaccards([change_a, change_b, change_a._replace(run="A seed 1")],
                           [changed_a, changed_b, changed_a], [mask])
  got = {(p.a, p.b): (p.jaccard, p.same_method) for p in pairs}
  assert got[("A seed 0", "B seed 0")] == (0.0, False) and got[("A seed 0", "A seed 1")] == (1.0, True)
  assert pairs[0].chance == pytest.approx(im.chance_jaccard(n_two, n_eos, int(mask.sum()))) and pairs[0].chance > 0
  text = ch.changes_report([result], pairs, data, {"command": "tcred identify toy --changes A", "references": ["base"],
                                                   "machine": "m", "wall_s": 1.0, "png": "x.png", "measure": "logp",
                                                   "threshold": ch.DEFAULT_THRESHOLD})
  assert "|Δlog p| ≥ 0.693" in text and "| A seed 0 | B seed 0 | no | 0.000 |" in text
  assert "| is-two | 1.000 [1.00, 1.00]" in text and "| *random* | 0.5 |" in text


# ------------------------------------------------------------------ runs and steps


def _fake_run(root, name="countdown-grpo", steps=(2,), rl_steps=2, **model):
  """A run directory's config.json and empty checkpoint step directories (listed, never opened)."""
  cfg = experiments.get_experiment(name).with_overrides([f"rl.steps={rl_steps}"])
  d = cfg.to_dict()
  d["model"].update(model)
  run = root / name / "seed-0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({**d, "seed": 0}))
  for s in steps:
    (run / "checkpoints" / str(s)).mkdir(parents=True)
  return run


def _refused(argv, needle, out, capsys):
  assert cli.main(argv) == 2, argv
  err = capsys.readouterr().err
  assert err.startswith("tcred: error:") and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
  assert not out.exists()


def test_steps_and_runs_are_checked_before_anything_is_written(tmp_path, capsys):
  run = _fake_run(tmp_path, steps=(2, 4), rl_steps=4)
  out = tmp_path / "out"
  base = ["identify", "countdown", "--out", str(out)]
  _refused([*base, "--policy", str(run), "--steps", "0,3"], "--steps 3: no checkpoint of step 3", out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,3"], "has checkpoints at steps 2, 4 (and 0, its base policy)",
           out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,9"], "--steps 9 is out of range", out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,9"], "allowed steps: 0..4", out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,-2"], "distinct checkpoint steps >= 0", out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "2,2"], "distinct checkpoint steps >= 0", out, capsys)
  _refused([*base, "--steps", "0,2"], "--steps needs --policy RUN_DIR", out, capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,2", "--rollouts-from", "both"], "--rollouts-from both", out,
           capsys)
  _refused([*base, "--policy", str(run), "--steps", "0,2", "--bases", "3"], "--bases must be 1 with --steps", out,
           capsys)
  other = _fake_run(tmp_path / "g", name="graph-path-grpo")
  _refused([*base, "--policy", f"{run},{other}", "--steps", "0,2"], "is a run of task 'graph-path', not 'countdown'",
           out, capsys)
  wide = _fake_run(tmp_path / "w", hidden_size=64)
  _refused([*base, "--policy", f"{run},{wide}", "--steps", "0,2"], "have different model settings", out, capsys)
  ent = _fake_run(tmp_path / "m", name="countdown-entropy-top20", steps=(2, 4), rl_steps=4)
  _refused([*base, "--policy", f"{run},{ent}", "--steps", "0,2"], "(grpo) and", out, capsys)
  _refused([*base, "--policy", f"{run},{ent}", "--steps", "0,2"], "(entropy-top20) use different methods", out, capsys)
  assert tr.parse_steps("40,0,10") == (0, 10, 40)


def test_change_runs_are_checked_before_anything_is_written(tmp_path, capsys):
  run = _fake_run(tmp_path)
  out = tmp_path / "out"
  base = ["identify", "countdown", "--out", str(out)]
  _refused([*base, "--changes", str(tmp_path / "missing")], "--changes", out, capsys)
  empty = _fake_run(tmp_path / "e", steps=())
  _refused([*base, "--changes", str(empty)], "the run has no checkpoint", out, capsys)
  other = _fake_run(tmp_path / "g", name="graph-path-grpo")
  _refused([*base, "--changes", str(other)], "is a run of task 'graph-path', not 'countdown'", out, capsys)
  _refused([*base, "--changes", str(run), "--policy", str(other)], "is a run of task 'graph-path'", out, capsys)
  big = _fake_run(tmp_path / "v", vocab_size=256)
  _refused([*base, "--changes", str(big), "--policy", str(run)], "has a vocabulary of 256 tokens", out, capsys)
  _refused([*base, "--changes", f"{run},{big}"], "has a vocabulary of 256 tokens", out, capsys)
  _refused([*base, "--changes", str(run), "--change-by", "rank"], "allowed values are logp, kl, argmax", out, capsys)
  _refused([*base, "--changes", str(run), "--change-threshold", "0"], "--change-threshold must be a number > 0", out,
           capsys)
  _refused([*base, "--changes", str(run), "--steps", "0,2"], "give one of them", out, capsys)
  _refused([*base, "--change-by", "kl"], "belong to --changes", out, capsys)


def test_keep_every_keeps_those_checkpoints(tmp_path):
  ckpt = Checkpointer(tmp_path / "c", max_to_keep=2, keep_every=3)
  for step in range(1, 9):
    ckpt.save(step, {"w": np.full(2, float(step))}, {})
  assert ckpt.steps() == [3, 6, 7, 8]
  ckpt.close()
  cfg = experiments.get_experiment("countdown-grpo")
  kept = cfg.with_overrides(["rl.keep_every=10"])
  from tcred.training.config import config_diff, run_config_hash

  assert run_config_hash(kept.to_dict()) == run_config_hash(cfg.to_dict())  # not a setting of the results
  assert config_diff(kept.to_dict(), cfg.to_dict()) == []
  with pytest.raises(ValueError, match="rl.keep_every must be an integer >= 1"):
    cfg.with_overrides(["rl.keep_every=0"])


# ------------------------------------------------------------------ end to end (slow)


def _tiny_run(root, name, params_of, steps, *, sft_steps=2):
  """A run directory of the tiny model with checkpoints `steps` holding `params_of(model config, step)`."""
  cfg = experiments.get_experiment(name).with_overrides(
      [f"model.{k}={v}" for k, v in model_preset("tiny").__dict__.items()
       if k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "max_position_embeddings")] + [f"rl.steps={max(steps)}", f"sft.steps={sft_steps}", "sft.batch_size=4"])
  run = root / name / "seed-0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "seed": 0}))
  ckpt = Checkpointer(run / "checkpoints", keep_every=1)
  tx = adamw(cfg.rl.lr, warmup=cfg.rl.warmup, weight_decay=cfg.rl.weight_decay, max_grad_norm=cfg.rl.max_grad_norm)
  for s in steps:
    params = params_of(cfg.model, s)
    ckpt.save(s, TrainState(params, tx.init(params), jnp.int32(s)), {"wall_s": 0.0})
  ckpt.close()
  return run


@pytest.mark.slow  # ~1 min at load: an SFT base of 2 steps and three tiny studies
def test_identify_across_the_steps_of_a_two_step_run(tmp_path, capsys):
  run = _tiny_run(tmp_path, "countdown-grpo", lambda model, s: fixed_policy({1: RUN_A, 2: BASE}[s])[1], steps=(1, 2))
  out = tmp_path / "out"
  assert cli.main(["identify", "countdown", "--policy", str(run), "--steps", "0,1,2", "--prompts", "3", "--rollouts",
                   "4", "--continuations", "2", "--bootstrap", "5", "--judges", "", "--fork-positions", "0",
                   "--no-replicas", "--out", str(out), "--no-progress"]) == 0
  text = (out / "identify-countdown-training-grpo.md").read_text()
  assert (out / "identify-countdown-training-grpo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "**Steps**: 0, 1, 2" in text and "| signal | step 0 | step 1 | step 2 |" in text
  table = text.split("## The policy at each step")[1].split("##")[0]
  entropy = {int(r.split("|")[1]): float(r.split("|")[7]) for r in table.splitlines() if r[:3] in ("| 0", "| 1", "| 2")}
  # each step's own policy: the SFT base (2 steps: near uniform), then the checkpoints' fixed distributions
  ent = lambda q: -sum(p * math.log(p) for p in q.values())
  assert entropy[0] > 3.0 and entropy[1] == pytest.approx(ent(RUN_A), abs=2e-3)
  assert entropy[2] == pytest.approx(ent(BASE), abs=2e-3)
  assert "## AUROC, fatal errors" in text and "## AUROC − bound row's (paired)" in text
  assert "| delta-logp | log π(o_t) − log π_ref(o_t)" in text  # the step against its base
  assert "tcred identify countdown --policy" in text


@pytest.mark.slow  # ~40 s at load
def test_cli_change_study_against_a_reference_run(tmp_path, capsys):
  ref = _tiny_run(tmp_path / "ref", "countdown-grpo", lambda model, s: fixed_policy(BASE)[1], steps=(1,))
  run_a = _tiny_run(tmp_path / "a", "countdown-grpo", lambda model, s: fixed_policy(RUN_A)[1], steps=(1,))
  run_b = _tiny_run(tmp_path / "b", "countdown-entropy-top20", lambda model, s: fixed_policy(RUN_B)[1], steps=(1,))
  out = tmp_path / "out"
  assert cli.main(["identify", "countdown", "--changes", f"{run_a},{run_b}", "--policy", str(ref), "--prompts", "3",
                   "--rollouts", "4", "--continuations", "2", "--bootstrap", "5", "--judges", "", "--fork-positions",
                   "0", "--no-replicas", "--out", str(out), "--no-progress"]) == 0
  text = (out / "rl-changes-countdown.md").read_text()
  assert (out / "rl-changes-countdown.png").exists()
  assert "## countdown-grpo: which rows predict" in text and "## countdown-entropy-top20: which rows predict" in text
  # every valid position of run A's table is changed iff TWO, of run B's iff EOS: disjoint sets
  line = next(x for x in text.splitlines() if x.startswith("| `countdown-grpo` seed 0"))
  assert "| no | 0.000 |" in line
