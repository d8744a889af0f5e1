"""benchmarks/peer_tunix.py: its report is rendered from the recorded JSON alone (fast), and a `--quick` run of
both sides end to end (slow; skipped where no interpreter imports Tunix)."""

import json
import os
import subprocess
import sys

import pytest

from bench_support import BENCHMARKS, load_benchmark, table_rows

sys.path.insert(0, str(BENCHMARKS))
import common  # noqa: E402

THREADS = {"requested": 1, "cores": 1, "omp": "1", "xla_flags": "", "torch": None}


def _record(failures=()):
  step = lambda s: {"tokens": 100, "sampling_s": s, "scoring_s": 0.01, "update_s": 2 * s, "step_s": 3 * s}
  sides = [{"side": "tcred", "steps": [step(1.0)], "threads": THREADS, "versions": {"jax": "0"}},
           {"side": "tunix", "steps": [{**step(2.0), "compiles": 0}], "threads": THREADS, "scorer": "exact",
            "versions": {"google-tunix": "0.1.7"}}]
  return {**common.machine_record("t", True, ["--quick"], "benchmarks/peer_tunix.py"),
          "args": {"prompts": 2, "group": 2, "tokens": 8, "warmup": 2, "steps": 1, "rounds": 1},
          "load": {"before": [3.0] * 3, "after": [3.0] * 3, "max": 1.0, "loaded": True}, "notes": "",
          "checkpoint": {"params": 1e5, "layers": 2, "hidden": 8, "vocab_size": 50},
          "prompts": {"prompt_width": 20, "eos": [2, 0], "pad": 0, "prompt_ids_match": True},
          "pythons": {"tcred": "py-a", "tunix": "py-b"}, "failures": list(failures),
          "by_threads": {"1": sides if not failures else sides[:1]}}


def test_report_is_rendered_from_its_record_alone(tmp_path):
  peer = load_benchmark("peer_tunix")
  out = tmp_path / "peer_tunix.md"
  text = common.write_results(out, _record(), peer.render)
  assert "**tcred / Tunix tokens/s: sampling 2.00x, update 2.00x, whole step 2.00x**" in text
  assert "**LOADED" in text and "--quick: tiny sizes" in text and "google-tunix 0.1.7" in text
  assert table_rows(text)["1"][1] == "Tunix"  # the last row of the table is Tunix's
  assert common.render_from(out.with_suffix(".json"), tmp_path / "again.md", peer.render) == text


def test_a_side_that_failed_is_reported_with_its_error(tmp_path):
  peer = load_benchmark("peer_tunix")
  failure = {"side": "tunix", "threads": 1, "command": "py-b peer_tunix.py --side tunix ...", "returncode": 1,
             "error": "ModuleNotFoundError: No module named 'tunix'\n"}
  text = common.write_results(None, _record([failure]), peer.render)
  assert "## What did not run" in text and "No module named 'tunix'" in text
  assert "no thread count has both sides: no ratio" in text


def test_committed_report_regenerates_from_its_json():
  md = BENCHMARKS / "results" / "peer_tunix.md"
  if not md.with_suffix(".json").exists():
    pytest.skip("no recorded peer_tunix.json yet")
  peer = load_benchmark("peer_tunix")
  assert "\n".join(peer.render(json.loads(md.with_suffix(".json").read_text()))) + "\n" == md.read_text()


def _tunix_python():
  """An interpreter that imports tunix: $TCRED_TUNIX_PYTHON, else this one; None when neither does."""
  for python in filter(None, [os.environ.get("TCRED_TUNIX_PYTHON"), sys.executable]):
    if subprocess.run([python, "-c", "import tunix"], capture_output=True).returncode == 0:
      return python
  return None


@pytest.mark.slow
def test_quick_run_measures_both_sides(tmp_path, capsys):
  python = _tunix_python()
  if python is None:
    pytest.skip("tunix is not importable here (pip install -e '.[tunix]', or point TCRED_TUNIX_PYTHON at an "
                "interpreter that has it)")
  out = tmp_path / "peer_tunix.md"
  argv = ["--quick", "--threads", "1", "--rounds", "1", "--prompts", "2", "--group", "2", "--tokens", "8",
          "--warmup", "2", "--steps", "1", "--allow-load", "--tunix-python", python, "--out", str(out)]
  assert load_benchmark("peer_tunix").main(argv) == 0
  text = capsys.readouterr().out
  assert out.read_text() == text and "## What did not run" not in text
  record = json.loads(out.with_suffix(".json").read_text())
  assert record["prompts"]["prompt_ids_match"]
  sides = {r["side"]: r for r in record["by_threads"]["1"]}
  assert set(sides) == {"tcred", "tunix"}
  for r in sides.values():
    (step,) = r["steps"]
    assert 0 < step["tokens"] <= 2 * 2 * 8 and step["update_s"] > 0 and step["sampling_s"] > 0
  assert "tcred / Tunix tokens/s" in text


@pytest.mark.slow
def test_a_tunix_side_that_cannot_start_is_recorded(tmp_path, capsys):
  if subprocess.run([sys.executable, "-c", "import tunix"], capture_output=True).returncode == 0:
    pytest.skip("tunix imports under this interpreter: the failure path needs one without it")
  out = tmp_path / "peer_tunix.md"
  argv = ["--quick", "--threads", "1", "--rounds", "1", "--prompts", "2", "--group", "2", "--tokens", "4",
          "--warmup", "1", "--steps", "1", "--allow-load", "--tunix-python", sys.executable, "--out", str(out)]
  assert load_benchmark("peer_tunix").main(argv) == 1
  text = out.read_text()
  assert "## What did not run" in text and "No module named 'tunix'" in text and "| 1 | tcred |" in text


@pytest.mark.parametrize("argv, message", [
    (["--group", "1"], "--group must be at least 2"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--warmup", "-1"], "--warmup must be at least 0"),
    (["--tunix-python", "/no/such/python"], "is not an executable interpreter"),
    (["--threads", "0"], "--threads takes a comma-separated list"),
])
def test_bad_arguments_stop_before_anything_is_written(argv, message, tmp_path, capsys):
  out = tmp_path / "peer_tunix.md"
  with pytest.raises(SystemExit) as stop:
    load_benchmark("peer_tunix").main([*argv, "--out", str(out)])
  assert stop.value.code not in (0, None) and not out.exists()
  err = capsys.readouterr().err + str(stop.value.code)
  assert message in err
