"""The fair side-by-side harness of benchmarks/common.py (DESIGN §6 "Fairness"): every side's process gets the
threads it was asked for and says so, a busy machine is refused or marked, and results files are rendered from
their recorded JSON alone."""

import json
import os
import sys

import pytest

from bench_support import load_benchmark

common = load_benchmark("common")

_CHILD = """import json, sys
sys.path.insert(0, {bench!r})
import common
if sys.argv[1:3] == ["--side", "lie"]:
  import os; os.environ["OMP_NUM_THREADS"] = "7"
print("noise on stdout")
print(json.dumps({{"side": sys.argv[2], "threads": common.pin_threads()}}))
"""


def _child(tmp_path):
  script = tmp_path / "child.py"
  script.write_text(_CHILD.format(bench=str(common.Path(common.__file__).parent)))
  return str(script)


def test_children_report_the_threads_they_were_given(tmp_path):
  runs = common.alternate_processes(_child(tmp_path), ["a", "b"], 1, [], threads=1)
  assert [r["side"] for r in runs["a"] + runs["b"]] == ["a", "b"]
  for r in runs["a"] + runs["b"]:
    t = r["threads"]
    assert (t["requested"], t["cores"], t["omp"]) == (1, 1, "1")
    assert "--xla_cpu_multi_thread_eigen=false" in t["xla_flags"] and "intra_op_parallelism_threads=1" in t["xla_flags"]


def test_a_child_with_other_threads_is_refused(tmp_path):
  with pytest.raises(RuntimeError, match="other thread counts than the 1 requested.*omp"):
    common.alternate_processes(_child(tmp_path), ["lie"], 1, [], threads=1)
  with pytest.raises(RuntimeError, match="did not report its threads"):
    common.check_pinned(None, 1, "x")
  with pytest.raises(RuntimeError, match="torch"):
    common.check_pinned({"requested": 2, "cores": 2, "omp": "2", "torch": 1, "xla_flags": ""}, 2, "x")


def test_pinned_env_replaces_earlier_thread_flags_and_keeps_others():
  env = common.pinned_env(2, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=9 "
                                           "--xla_dump_to=/x", "OMP_NUM_THREADS": "5"})
  assert env["XLA_FLAGS"].split() == ["--xla_dump_to=/x", "--xla_cpu_multi_thread_eigen=true",
                                      "intra_op_parallelism_threads=2"]
  assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env[common.THREADS_ENV] == "2"
  with pytest.raises(ValueError, match="threads must be in 1.."):
    common.pinned_cores(len(os.sched_getaffinity(0)) + 1)


def test_torch_threads_are_applied_in_the_child(monkeypatch):
  pytest.importorskip("torch")
  import torch
  before = torch.get_num_threads()
  monkeypatch.setenv(common.THREADS_ENV, "1")
  try:
    assert common.pin_threads(torch=True)["torch"] == 1
  finally:
    torch.set_num_threads(before)


def test_thread_counts_are_validated():
  assert common.thread_counts("1") == [1]
  for bad in ("", "0", "a", str(len(os.sched_getaffinity(0)) + 1)):
    with pytest.raises(SystemExit, match="--threads takes"):
      common.thread_counts(bad)


def test_a_busy_machine_is_refused_unless_allowed(monkeypatch, capsys):
  monkeypatch.setattr(common, "load_average", lambda: (3.0, 2.0, 1.0))
  with pytest.raises(SystemExit) as e:
    common.check_load(1.0, allow=False, quick=False)
  assert e.value.code == 2 and "load average 3.00 > 1" in capsys.readouterr().err
  rec = common.finish_load(common.check_load(1.0, allow=True, quick=False))
  assert rec["loaded"] and any("LOADED" in line for line in common.load_lines(rec))
  monkeypatch.setattr(common, "load_average", lambda: (0.2, 0.2, 0.2))
  quiet = common.finish_load(common.check_load(1.0, allow=False, quick=False))
  assert not quiet["loaded"] and not any("LOADED" in line for line in common.load_lines(quiet))


def _peer_record():
  step = lambda s: {"tokens": 100, "sampling_s": s, "scoring_s": 0.01, "update_s": 2 * s, "step_s": 3 * s}
  threads = {"requested": 1, "cores": 1, "omp": "1", "xla_flags": "", "torch": None}
  return {**common.machine_record("t", False, ["--rounds", "1"], "benchmarks/peer_grpo.py"),
          "args": {"prompts": 2, "group": 2, "tokens": 8, "warmup": 0, "steps": 1, "rounds": 1},
          "load": {"before": [0.1] * 3, "after": [0.2] * 3, "max": 1.0, "loaded": False}, "notes": "a note\n",
          "checkpoint": {"params": 1e6, "layers": 2, "hidden": 8, "vocab_size": 50},
          "by_threads": {"1": [{"side": "tcred", "steps": [step(1.0)], "threads": threads},
                               {"side": "trl", "steps": [step(4.0)], "threads": {**threads, "torch": 1}}]}}


def test_results_files_are_rendered_from_their_record_alone(tmp_path):
  peer = load_benchmark("peer_grpo")
  out = tmp_path / "peer_grpo.md"
  text = common.write_results(out, _peer_record(), peer.render)
  assert out.read_text() == text and json.loads(out.with_suffix(".json").read_text())["args"]["prompts"] == 2
  assert "whole step 4.00x** (target >= 2x on the whole step: met)" in text and "a note" in text
  again = tmp_path / "again.md"
  assert common.render_from(out.with_suffix(".json"), again, peer.render) == text == again.read_text()


@pytest.mark.parametrize("name", ["peer_grpo", "train_step", "sampler", "peer_tunix", "scaling_length"])
def test_committed_results_regenerate_from_their_json(name):
  """A committed report equals what its script renders from the committed record: nobody edited it."""
  md = common.Path(common.__file__).parent / "results" / f"{name}.md"
  if not md.with_suffix(".json").exists():
    pytest.skip(f"{md.name} has no recorded JSON yet (measured before the fair harness)")
  module = load_benchmark(name)
  assert "\n".join(module.render(json.loads(md.with_suffix(".json").read_text()))) + "\n" == md.read_text()


def test_the_load_after_a_measurement_marks_nothing(monkeypatch):
  """The measurement's own processes raise the load it ends with: only the load before marks a record."""
  loads = iter([(0.2, 0.2, 0.2), (1.9, 0.9, 0.5)])
  monkeypatch.setattr(common, "load_average", lambda: next(loads))
  rec = common.finish_load(common.check_load(1.0, allow=False, quick=False))
  assert rec["after"] == [1.9, 0.9, 0.5] and not rec["loaded"]
