"""Smoke test of benchmarks/signals.py: `--quick` runs in-process and prints every row.

No timing is asserted (timings belong in benchmarks/, never in tests).
"""

import pytest
from bench_support import load_benchmark, table_rows

pytestmark = pytest.mark.slow  # the benchmark scripts' smoke runs (~60 s): run with -m slow and in benchmarks


def test_quick_benchmark_prints_a_row_per_function(capsys, tmp_path):
  bench = load_benchmark("signals")
  out_file = tmp_path / "signals.md"
  assert bench.main(["--quick", "--out", str(out_file)]) == 0
  text = capsys.readouterr().out
  assert "Command: `python " in text and "--quick" in text
  assert "os.cpu_count()=" in text
  rows = table_rows(text)
  for name in bench.FUNCTION_NAMES:
    assert name in rows, f"no table row for {name}"
    cells = rows[name]
    assert len(cells) == 7, cells
    assert float(cells[2]) >= 0 and float(cells[3]) >= 0  # NumPy ms, JAX ms
    assert cells[4].endswith("×")
    assert cells[6] == "yes", f"{name}: JAX and NumPy outputs disagree"
  for names in bench.EXTRAS_NAMES:
    cells = rows[", ".join(names)]
    assert float(cells[1]) > 0 and cells[4].endswith("×")
  assert "(plain forward: response_logprobs)" in rows
  assert out_file.read_text().strip() == text.strip()
