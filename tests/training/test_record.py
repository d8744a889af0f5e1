"""The credit explorer's record files: round trip, due steps, and clear errors on bad files."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from tcred.judges import mc
from tcred.training.record import (RECORD_VERSION, DecisiveLabels, RecordError, decisive_labels, load_record,
                                  method_signals, record_due, record_path, recorded_steps, save_record,
                                  token_pieces)
from tcred.tasks.registry import make_task
from tcred.testing.explore import fake_continuation_means, synthetic_record, token_batch

TASK = make_task("countdown")


def _same(a, b):
  for f in dataclasses.fields(a):
    x, y = getattr(a, f.name), getattr(b, f.name)
    if isinstance(x, np.ndarray):
      np.testing.assert_array_equal(x, y)
      assert x.dtype == y.dtype, f.name
    elif isinstance(x, dict):
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    elif isinstance(x, DecisiveLabels):
      _same(x, y)
    else:
      assert x == y, f.name


@pytest.mark.parametrize("decisive", [0, 2])
def test_round_trip(tmp_path, decisive):
  rec = synthetic_record(b=3, g=4, t=9, step=40, signals=("entropy", "surprisal", "ig"), decisive_prompts=decisive)
  assert (rec.decisive is None) == (decisive == 0)
  path = save_record(tmp_path, rec)
  assert path == record_path(tmp_path, 40) == tmp_path / "explore" / "step-000040.npz"
  assert recorded_steps(tmp_path) == [40]
  _same(rec, load_record(path))
  save_record(tmp_path, dataclasses.replace(rec, step=7))
  assert recorded_steps(tmp_path) == [7, 40]
  assert not [p for p in (tmp_path / "explore").iterdir() if p.name.startswith(".")]  # no temporary left


def test_shapes_are_checked():
  rec = synthetic_record(b=2, g=3, t=5)
  with pytest.raises(RecordError, match=r"credit must have shape \(2, 3, 5\)"):
    dataclasses.replace(rec, credit=rec.credit[:, :2])
  with pytest.raises(RecordError, match="signal/entropy"):
    dataclasses.replace(rec, signals={"entropy": rec.credit[0]})
  with pytest.raises(RecordError, match="token pieces"):
    dataclasses.replace(rec, pieces=[[p[:-1] if p else ["x"] for p in row] for row in rec.pieces])
  d = synthetic_record(b=2, g=3, t=5, decisive_prompts=1).decisive
  with pytest.raises(RecordError, match=r"decisive/flag must have shape \(2, 3, 5\)"):
    dataclasses.replace(rec, decisive=dataclasses.replace(d, decisive=d.decisive[:, :, :4]))
  with pytest.raises(RecordError, match=r"decisive/labelled must have shape \(2,\)"):
    dataclasses.replace(rec, decisive=dataclasses.replace(d, labelled=d.labelled[:1]))


def test_version_1_records_still_load(tmp_path):
  """A record written before the decisive flags (version 1: no "decisive" in meta) loads without them;
  a version 2 record whose meta names flags but lacks their arrays is refused."""
  path = save_record(tmp_path, synthetic_record(decisive_prompts=2))
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  meta = json.loads(str(arrays["meta"]))
  old = {k: v for k, v in arrays.items() if not k.startswith("decisive/")}
  old.update(version=np.int32(1), meta=np.array(json.dumps({k: v for k, v in meta.items() if k != "decisive"})))
  np.savez_compressed(path, **old)
  rec = load_record(path)
  assert rec.decisive is None and rec.step == meta["step"]
  np.testing.assert_array_equal(rec.credit, arrays["credit"])
  np.savez_compressed(path, **{**old, "version": np.int32(2), "meta": arrays["meta"]})
  with pytest.raises(RecordError, match=r"lacks the arrays \['decisive/labelled', 'decisive/advantage', "
                                        r"'decisive/flag'\]"):
    load_record(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing-array", "version"])
def test_bad_files_raise_a_clear_error(tmp_path, damage):
  path = save_record(tmp_path, synthetic_record())
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[:len(data) // 2])
  elif damage == "garbage":
    path.write_bytes(b"not a record at all" * 10)
  elif damage == "empty":
    path.write_bytes(b"")
  else:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
    if damage == "missing-array":
      del arrays["credit"]
    else:
      arrays["version"] = np.int32(RECORD_VERSION + 1)
    np.savez_compressed(path, **arrays)
  want = {"missing-array": r"lacks the arrays \['credit'\]",
          "version": f"record version {RECORD_VERSION + 1}; this tcred reads versions 1, 2"}.get(
              damage, "corrupt or truncated")
  with pytest.raises(RecordError, match=want) as e:
    load_record(path)
  assert str(path) in str(e.value)
  with pytest.raises(RecordError, match="does not exist"):
    load_record(tmp_path / "nope.npz")


def test_record_due():
  due = lambda every, steps=40: [d for d in range(1, steps + 1) if record_due(every, 10, steps, d)]
  assert due(None) == [10, 20, 30, 40]  # the evaluation steps
  assert due(15) == [15, 30, 40]  # and the last step
  assert due(0) == []
  assert due(None, steps=7) == [7]


def test_token_pieces_join_to_the_text():
  task = make_task("countdown")
  tok = task.tokenizer
  ids = tok.encode("3+4=7")
  tokens = np.zeros((1, 2, 8), np.int32)
  tokens[0, 0, :len(ids)] = ids
  tokens[0, 0, len(ids)] = tok.eos_id
  mask = np.zeros((1, 2, 8), bool)
  mask[0, 0, :len(ids) + 1] = True
  pieces = token_pieces(tok, tokens, mask)
  assert pieces[0][1] == [] and len(pieces[0][0]) == len(ids) + 1
  assert "".join(pieces[0][0]) == "3+4=7" and pieces[0][0][-1] == ""


def test_record_every_is_not_a_setting_of_the_results():
  """Recording more or less changes neither the config hash (`tcred table`) nor what `--resume` accepts."""
  from tcred import experiments
  from tcred.training.config import config_diff, run_config_hash

  experiments.load()
  cfg = experiments.get_experiment("countdown-grpo")
  a = {**cfg.to_dict(), "seed": 0}
  b = {**cfg.with_overrides(["rl.record_every=3"]).to_dict(), "seed": 0}
  assert a["rl"]["record_every"] is None and b["rl"]["record_every"] == 3
  assert run_config_hash(a) == run_config_hash(b) and config_diff(a, b) == []
  assert config_diff(a, {**cfg.with_overrides(["rl.lr=0.5"]).to_dict(), "seed": 0})  # a real setting differs
  for bad in ("-1", "abc"):
    with pytest.raises(ValueError, match="rl.record_every"):
      cfg.with_overrides([f"rl.record_every={bad}"])


def test_decisive_labels_of_the_first_trained_prompts(monkeypatch):
  """The first `prompts` groups that trained are labelled, with the study's |A_t| ≥ δ on Monte-Carlo values
  (a hand-made policy for the continuations, tests/judges/test_mc_judge.py), lost prefixes never continued."""
  rng = np.random.default_rng(1)
  problems = [TASK.sample(rng) for _ in range(3)]
  responses = [[TASK.demonstration(p, rng) for _ in range(2)] for p in problems]
  tokens, mask = token_batch(TASK, responses)
  rewards = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
  valid = np.array([False, True, True])  # the first group is filler (dynamic sampling): not labelled
  calls = []
  monkeypatch.setattr(mc, "continuation_means", fake_continuation_means(calls))
  kw = dict(continuations=4, delta=0.5, key=None, temperature=1.0)
  d = decisive_labels(None, None, TASK, problems, tokens, mask, rewards, valid, prompts=1, **kw)
  np.testing.assert_array_equal(d.labelled, [False, True, False])
  assert not d.advantage[~d.labelled].any() and not d.decisive[~d.labelled].any()
  assert d.continuations == 4 and d.delta == 0.5 and d.prefixes == len(calls[0]) > 0
  # Labelled prompt 1 is the sub-batch's problem 0: the fake's values, 0 on prefixes the oracle calls lost.
  oracle = [[TASK.prefix_value(problems[1], TASK.tokenizer.decode(tokens[1, j, :k])) for k in range(mask[1, j].sum())]
            for j in range(2)]
  for j in range(2):
    n = int(mask[1, j].sum())
    values = np.array([0.0 if oracle[j][k] == 0 else ((7 * k) % 5) / 4 for k in range(n)] + [rewards[1, j]])
    np.testing.assert_allclose(d.advantage[1, j, :n], np.diff(values), atol=1e-7)
    np.testing.assert_array_equal(d.decisive[1, j, :n], np.abs(np.diff(values)) >= 0.5)
  assert all(t[0] == 0 for t in calls[0])  # only the labelled problem was continued
  d3 = decisive_labels(None, None, TASK, problems, tokens, mask, rewards, valid, prompts=5, **kw)
  np.testing.assert_array_equal(d3.labelled, valid)  # at most the trained groups
  assert decisive_labels(None, None, TASK, problems, tokens, mask, rewards, valid, prompts=0, **kw) is None
  assert decisive_labels(None, None, TASK, problems, tokens, mask, rewards, valid * False, prompts=2, **kw) is None


def test_decisive_settings_are_no_settings_of_the_results():
  """The decisive flags' options change what a run records, not its results (config hash, `--resume`);
  their defaults are the identifiability study's δ and K; bad values are refused naming the field."""
  from tcred import experiments
  from tcred.evaluation.identify import IdentifyConfig
  from tcred.training.config import config_diff, run_config_hash

  experiments.load()
  cfg = experiments.get_experiment("countdown-grpo")
  assert cfg.rl.record_decisive_prompts == 0  # off by default (see README "Credit explorer")
  assert cfg.rl.record_decisive_delta == IdentifyConfig().delta
  assert cfg.rl.record_decisive_continuations == IdentifyConfig().continuations
  a = {**cfg.to_dict(), "seed": 0}
  b = {**cfg.with_overrides(["rl.record_decisive_prompts=4", "rl.record_decisive_continuations=8",
                             "rl.record_decisive_delta=0.5"]).to_dict(), "seed": 0}
  assert run_config_hash(a) == run_config_hash(b) and config_diff(a, b) == []
  for bad in ("rl.record_decisive_prompts=-1", "rl.record_decisive_continuations=0", "rl.record_decisive_delta=1.5",
              "rl.record_decisive_delta=0"):
    with pytest.raises(ValueError, match=bad.split("=")[0]):
      cfg.with_overrides([bad])


def test_judge_lanes_spread_the_step_scores_by_hand():
  """A step judge's extras give `judge_score` (s_k of each token's step k) and `judge_change` (|s_k − s_{k−1}|,
  0 where either score is invalid), 0 on padding; no judge extras, no judge lanes."""
  rng = np.random.default_rng(0)
  b, g, t = 2, 3, 6
  length = np.array([[6, 4, 1], [5, 6, 3]])
  mask = np.arange(t) < length[..., None]
  steps = np.zeros((b, g, t), np.int32)
  steps[0, 0], steps[0, 1, :4], steps[0, 2, :1] = [1, 1, 2, 2, 2, 3], [1, 2, 2, 2], [1]
  steps[1, 0, :5], steps[1, 1], steps[1, 2, :3] = [1, 1, 1, 1, 2], [1, 2, 3, 4, 4, 4], [1, 1, 1]
  scores = rng.uniform(size=(b, g, t + 1)).astype(np.float32)
  valid = np.arange(t + 1) <= steps.max(-1)[..., None]
  valid[1, 1, 2] = False  # a step the judge could not score
  extras = {"judge_scores": scores, "judge_valid": valid, "judge_steps": steps}
  out = method_signals(extras, mask, np.zeros((b, g), np.float32))
  assert set(out) == {"judge_score", "judge_change"}
  want_score, want_change = np.zeros((b, g, t)), np.zeros((b, g, t))
  for i, j, s in np.ndindex(b, g, t):
    k = steps[i, j, s]
    if mask[i, j, s] and k > 0:
      want_score[i, j, s] = scores[i, j, k] if valid[i, j, k] else 0.0
      if valid[i, j, k] and valid[i, j, k - 1]:
        want_change[i, j, s] = abs(scores[i, j, k] - scores[i, j, k - 1])
  np.testing.assert_allclose(out["judge_score"], want_score, atol=1e-6)
  np.testing.assert_allclose(out["judge_change"], want_change, atol=1e-6)
  assert all(v.dtype == np.float32 and v.shape == (b, g, t) for v in out.values())
  assert method_signals({"ig": np.ones((b, g, t))}, mask, np.zeros((b, g))) == {}


def test_tree_gap_lane_is_the_tree_methods_own_gap():
  """On tree extras the recorded `tree-sibling-gap` is |TreeRL's segment advantage| (the credit module's own
  gap) and the NumPy reference's."""
  from tcred.credit import make_credit
  from tcred.credit.base import CreditInputs
  from tcred.credit.tree import tree_extras
  from tcred.sampling.rollout import Trees
  from tcred.sampling.tree import tree_arrays
  from tcred.testing import numpy_refs as ref
  t = 8  # two prompts' forests of 6 rows (tests/credit/test_tree_credit.py's): forks inside trees, and a star
  src = [dict(source=[-1, -1, 0, 0, 2, 1], fork_pos=[0, 0, 3, 3, 4, 0], length=[6, 4, 5, 6, 7, 2], tree_id=[0, 1, 0, 0, 0, 1]),
         dict(source=[-1, -1, 0, 0, 0, 0], fork_pos=[0, 0, 2, 2, 2, 2], length=[5, 3, 4, 6, 3, 8], tree_id=[0, 1, 0, 0, 0, 0])]
  cols = {k: np.array([s[k] for s in src]) for k in ("source", "fork_pos", "length", "tree_id")}
  arrays = [tree_arrays(*(np.array(s[k]) for k in ("source", "fork_pos", "length", "tree_id")), trees=2, max_new_tokens=t)
            for s in src]
  extras = tree_extras(Trees(source=cols["source"], fork_pos=cols["fork_pos"], tree_id=cols["tree_id"], arrays=arrays,
                             fed=0))
  mask = np.arange(t) < cols["length"][..., None]
  rewards = np.array([[1, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 1]], np.float32)
  out = method_signals(extras, mask, rewards)
  assert set(out) == {"tree-sibling-gap"}
  zeros = np.zeros(mask.shape, np.float32)
  inputs = CreditInputs(rewards=rewards, mask=mask, group_valid=np.ones(2, bool), entropy=zeros, logp=zeros,
                        old_logp=zeros, extras=extras)
  credit = np.asarray(make_credit("treerl")(inputs).advantages)
  np.testing.assert_allclose(out["tree-sibling-gap"], np.where(mask, np.abs(credit), 0.0), atol=1e-6)
  for i, a in enumerate(arrays):
    want = ref.tree_sibling_gap(a.parent, a.is_leaf, a.valid, a.leaf_row, rewards[i], a.token_node)
    np.testing.assert_allclose(out["tree-sibling-gap"][i], want, atol=1e-5)
  assert out["tree-sibling-gap"][mask].max() > 0


def test_sigma_lane_for_methods_given_the_information_gain():
  """A method given `info_gain` records DRO's cross-rollout σ (`xroll-sigma`: the group's std of the running
  answer log-likelihood, shared by the group at each position), as the NumPy reference."""
  from tcred.testing import numpy_refs as ref
  rng = np.random.default_rng(1)
  mask = np.arange(7) < np.array([[7, 3, 5], [2, 2, 6]])[..., None]
  ig = rng.normal(size=mask.shape).astype(np.float32)
  out = method_signals({"info_gain": ig, "ref_std": np.ones((2, 4), np.float32)}, mask, np.zeros((2, 3)))
  assert set(out) == {"xroll-sigma"}
  for i in range(2):
    np.testing.assert_allclose(out["xroll-sigma"][i], ref.running_answer_sigma(ig[i], mask[i]), atol=1e-5)


def test_oracle_judge_lanes_of_countdown_responses():
  """The oracle judge's extras of countdown responses (demonstrations, some of which lose their problem, and
  another problem's) give per-token lanes equal to its step scores s_k = prefix value after step k,
  spread on the step's tokens by hand."""
  from tcred.credit.judge import judge_arrays
  from tcred.judges.credit import token_steps
  from tcred.training.data import eval_problems
  rng = np.random.default_rng(0)
  problems = eval_problems(TASK, 3)
  texts = [[TASK.demonstration(p, rng), TASK.demonstration(problems[(i + 1) % 3], rng)] for i, p in enumerate(problems)]
  tokens, mask = token_batch(TASK, texts)
  scores = [[[TASK.prefix_value(p, "")] + [TASK.prefix_value(p, x[:e]) for e in TASK.step_ends(x)] for x in group]
            for p, group in zip(problems, texts)]
  width = max(len(s) for group in scores for s in group)
  padded = np.zeros((3, 2, width), np.float32)
  valid = np.zeros((3, 2, width), bool)
  for i, j in np.ndindex(3, 2):
    padded[i, j, :len(scores[i][j])], valid[i, j, :len(scores[i][j])] = scores[i][j], True
  extras = judge_arrays(TASK, tokens, mask, texts, padded, valid)
  out = method_signals(extras, mask, np.zeros((3, 2), np.float32))
  for i, j in np.ndindex(3, 2):
    s = np.array(scores[i][j])
    steps = token_steps(TASK.step_ends(texts[i][j]), len(texts[i][j]) + 1, TASK.max_response_len)  # chars = tokens
    np.testing.assert_array_equal(out["judge_score"][i, j], np.where(steps > 0, s[steps], 0.0))
    change = np.concatenate([[0.0], np.abs(np.diff(s))])
    np.testing.assert_allclose(out["judge_change"][i, j], np.where(steps > 0, change[steps], 0.0), atol=1e-6)
  assert set(np.unique(out["judge_score"][mask])) == {0.0, 1.0} and out["judge_change"].max() == 1.0  # lost steps
