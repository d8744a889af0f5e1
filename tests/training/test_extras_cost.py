"""The per-step cost of the extra forward passes (DESIGN §4.3(b): "report its cost in tokens and seconds")."""

import json

import numpy as np
import pytest

from tcred import cli
from tcred.credit.extras import extras_token_count

B, G = 2, 2
TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", f"rl.prompts_per_step={B}",
        "--set", f"rl.group_size={G}", "--set", "rl.final_eval_prompts=4", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=2", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]


def test_extras_token_count_hand_computed():
  shapes = dict(batch=2, group=3, prompt_len=5, response_len=4, answer_len=3, solution_len=7)
  packed = 2 * 3 * (5 + 4 + 4 * 2)  # P + T + T·(J − 1) per rollout
  assert extras_token_count((), **shapes) == 0
  assert extras_token_count(("info_gain",), **shapes) == packed
  assert extras_token_count(("ref_logp", "ref_std"), **shapes) == packed
  assert extras_token_count(("mi",), **shapes) == 2 * 3 * (5 + 4) + 2 * 7  # plain forward + solution
  assert extras_token_count(("info_gain", "mi"), **shapes) == packed + 2 * 7
  with pytest.raises(ValueError, match="allowed"):
    extras_token_count(("nope",), **shapes)


def test_extras_cost_is_logged_per_step_and_summarised(tmp_path):
  name = "countdown-dro-r3"  # needs ref_logp / ref_std: one packed scoring pass per batch
  assert cli.main(["run", name, "--steps", "2", "--out", str(tmp_path), "--no-progress", *TINY]) == 0
  run = tmp_path / name / "seed-0"
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert 0 < r["time/extras_s"] <= r["time/sample_s"]  # the extras are part of the sampling phase
    # Every rollout's response (and more: prompt, answer copies) went through the scoring pass.
    assert r["counts/extras_tokens"] >= B * G * r["train/response_len"] > 0
  summary = json.loads((run / "summary.json").read_text())
  assert summary["extras_tokens"] == sum(r["counts/extras_tokens"] for r in rows)
  # The scoring pass's answer information gain gives the record DRO's cross-rollout σ lane.
  from tcred.testing import numpy_refs as ref
  from tcred.training.record import load_record, record_path
  rec = load_record(record_path(run, 2))
  assert {"info_gain", "xroll-sigma"} <= set(rec.signals)
  for i in range(rec.mask.shape[0]):
    np.testing.assert_allclose(rec.signals["xroll-sigma"][i], ref.running_answer_sigma(rec.signals["info_gain"][i],
                                                                                        rec.mask[i]), atol=1e-4)
  assert summary["extras_wall_s"] == pytest.approx(sum(r["time/extras_s"] for r in rows))
  # The run's TensorBoard hparams record is written when the run ends.
  assert len(list(run.glob("events.out.tfevents.*.hparams"))) == 1
