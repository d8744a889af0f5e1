"""Shared check of the sharded-run tests: two runs' metrics.jsonl rows agree."""

import pytest


def assert_same_metric_rows(got: list[dict], want: list[dict]) -> None:
  """Row by row, the same keys; rollout statistics (`train/`, `counts/`, step) exactly, the rest within f32
  1e-5 (reduction orders differ across partitions and processes)."""
  for a, b in zip(got, want):
    assert sorted(a) == sorted(b)
    for k in b:
      if k.startswith(("train/", "counts/")) or k == "step":
        assert a[k] == b[k], k
      else:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), k
