"""Helpers shared by the benchmark smoke tests: load a benchmark script, read its Markdown tables."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name):
  """Imports `benchmarks/<name>.py` as a module (the scripts are not a package)."""
  spec = importlib.util.spec_from_file_location(f"tcred_benchmarks_{name}", BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def table_rows(text):
  """First cell -> the list of cells of every Markdown table row."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      rows[cells[0]] = cells
  return rows
