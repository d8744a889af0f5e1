"""benchmarks/zero_grad_hold.py: paired statistics of two arms of runs, and its refusals."""

import json

import numpy as np
import pytest
from scipy import stats

from bench_support import load_benchmark

hold = load_benchmark("zero_grad_hold")


def _run(root, seed, curve, final, held=0):
  run = root / "exp" / f"seed-{seed}"
  run.mkdir(parents=True)
  rows = [{"step": 10 * (i + 1), "eval/pass1": y, "optim/held": held if i == 0 else 0} for i, y in enumerate(curve)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (run / "summary.json").write_text(json.dumps({"final_pass1": final}))


def test_report_pairs_the_seeds_and_counts_collapses(tmp_path, capsys):
  without, with_ = tmp_path / "a", tmp_path / "b"
  arms = {1: ([0.2, 0.8], 0.1, [0.2, 0.6], 0.7),  # collapses without the hold only (0.1 < 0.8 / 2)
          2: ([0.4, 0.6], 0.6, [0.2, 0.4], 0.5),
          3: ([0.5, 0.9], 0.9, [0.3, 0.9], 0.8)}
  for seed, (ca, fa, cb, fb) in arms.items():
    _run(without, seed, ca, fa)
    _run(with_, seed, cb, fb, held=3)
  assert hold.main(["--without", str(without), "--with", str(with_), "--experiment", "exp", "--seeds", "1-3",
                    "--out", str(tmp_path / "r.md")]) == 0
  text = (tmp_path / "r.md").read_text()
  assert "| 1 | 0.100 / 0.700 | 0.500 / 0.400 | yes / no | 3 |" in text
  final = np.array([0.6, -0.1, -0.1])
  assert f"| final pass@1 | {final.mean():+.3f} |" in text
  assert f"{stats.wilcoxon(final).pvalue:.3f} (2 of 3 seeds lower with the hold) |" in text
  assert "Collapses: 1 of 3 without the hold, 0 with it" in text and "McNemar exact p = 1.000" in text
  capsys.readouterr()


@pytest.mark.parametrize("seeds", ["7", "a-b", "1,x"])
def test_bad_seeds_exit_2_naming_the_form(tmp_path, capsys, seeds):
  with pytest.raises(SystemExit) as err:
    hold.main(["--without", str(tmp_path), "--with", str(tmp_path), "--seeds", seeds])
  assert err.value.code == 2
  assert "FIRST-LAST or a comma-separated list" in capsys.readouterr().err


def test_missing_runs_exit_2_before_writing(tmp_path, capsys):
  _run(tmp_path / "a", 1, [0.1, 0.2], 0.2)
  out = tmp_path / "r.md"
  assert hold.main(["--without", str(tmp_path / "a"), "--with", str(tmp_path / "b"), "--experiment", "exp",
                    "--seeds", "1,2", "--out", str(out)]) == 2
  assert "no finished run at" in capsys.readouterr().err and not out.exists()
