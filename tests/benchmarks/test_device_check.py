"""benchmarks/device_check.sh: its dry run passes on CPU, plans every step and writes nothing."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _run(*args):
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_dry_run_plans_every_step_on_cpu(tmp_path):
  out = tmp_path / "reports"
  proc = _run("--dry-run", "--python", sys.executable, "--out", str(out))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  text = proc.stdout
  assert "device_check.sh --dry-run: ok" in text and "platform cpu" in text
  for step in ("| tests | planned", "| run-embedded | planned", "| benchmarks | planned"):
    assert step in text
  assert "tcred.cli run countdown-grpo --steps 3" in text and f"run_all.py --out-dir {out}" in text
  assert "| run-real-model |" in text  # planned, or skipped with its reason
  assert not out.exists()  # a dry run writes no report


def test_unknown_option_and_cpu_without_dry_run_are_refused():
  proc = _run("--frobnicate")
  assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr
  proc = _run("--platform", "cpu", "--python", sys.executable)
  assert proc.returncode == 2 and "no accelerator found" in proc.stderr
