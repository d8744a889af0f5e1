"""Smoke test of benchmarks/judges.py: `--quick` (tiny policy, countdown) writes every row."""

import pytest
from bench_support import load_benchmark, table_rows

pytestmark = pytest.mark.slow  # ~60-90 s: SFT of a tiny policy, MC labels, a PRM, three judges scored


def test_quick_judges_benchmark_writes_a_row_per_judge(capsys, tmp_path):
  bench = load_benchmark("judges")
  out_file = tmp_path / "judges.md"
  assert bench.main(["--quick", "--judges", "mc", "prm", "nonesuch", "--out", str(out_file)]) == 0
  text = capsys.readouterr().out
  assert "Command: `python " in text and "--quick" in text and "## countdown" in text
  rows = table_rows(text)
  assert rows["oracle (the target itself)"][3].startswith("1.000")  # accuracy on erroneous rollouts
  assert "mc (K = 2)" in rows and rows["prm"][1].startswith("24 ")  # 24 training labels
  assert rows["nonesuch"][2] == "not registered in this build"
  assert "| 2 | abs-q |" in text  # the replica-agreement table (K = 2)
  assert out_file.read_text().strip() == text.strip()
