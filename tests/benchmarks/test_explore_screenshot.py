"""benchmarks/explore_screenshot.py: the prompt it shows, and the committed screenshot with its report."""

import numpy as np

from bench_support import BENCHMARKS, load_benchmark
from tcred.testing.explore import synthetic_record

shot = load_benchmark("explore_screenshot")


def test_it_shows_the_labelled_mixed_group_with_the_most_decisive_tokens():
  rec = synthetic_record(b=5, g=4, t=12, decisive_prompts=3, seed=3)
  rec.rewards[:] = 0.0
  rec.rewards[1, 0] = rec.rewards[2, 1] = 1.0  # groups 1 and 2 have mixed rewards; group 4 is not labelled
  rec.rewards[4, 0] = 1.0
  flags = rec.decisive.decisive.sum((1, 2))
  assert shot.pick_prompt(rec) == (1 if flags[1] >= flags[2] else 2)
  rec.rewards[1:3] = 0.0  # no mixed group: the most flags among the labelled
  assert shot.pick_prompt(rec) == int(np.argmax(flags[:3]))


def test_the_committed_screenshot_is_small_and_reported():
  png = BENCHMARKS / "results" / "explore-countdown.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 500_000
  text = png.with_suffix(".md").read_text()
  assert "python benchmarks/explore_screenshot.py" in text and "rl.record_decisive_prompts=" in text
  assert "| step | prompts labelled |" in text and "/work/" not in text
