"""The credit explorer page's size and time to first paint (issue 26).

Builds a synthetic record (`tcred.testing.explore.synthetic_record`) of B prompts × G rollouts × T tokens
(every rollout full length), writes its page, opens it in headless Chromium (`chromium --dump-dom`) and
reads the marks the page sets: `data-first-render-ms` (the first group drawn) and `data-first-paint-ms`
(the next animation frame), both `performance.now()` since navigation start. Also prints the record
file's size at suite-quick's shapes (16 prompts × 8 rollouts; countdown and graph-path response budgets).

  python benchmarks/explore_page.py [--prompts 64] [--group 16] [--tokens 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

from tcred.evaluation.explore import page_html
from tcred.tasks.registry import make_task
from tcred.testing.explore import synthetic_record
from tcred.training.record import save_record

SIGNALS = ("entropy", "surprisal", "oracle_value", "fatal")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompts", type=int, default=64)
  p.add_argument("--group", type=int, default=16)
  p.add_argument("--tokens", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp)
    for task in ("countdown", "graph-path"):
      t = make_task(task).max_response_len
      path = save_record(out / task, synthetic_record(b=16, g=8, t=t, signals=SIGNALS))
      print(f"suite-quick record, {task} (16 x 8 x {t}): {path.stat().st_size / 1e3:.1f} KB")
    rec = synthetic_record(b=args.prompts, g=args.group, t=args.tokens, min_len=args.tokens, signals=SIGNALS)
    print(f"record {args.prompts} x {args.group} x {args.tokens}: "
          f"{save_record(out / 'big', rec).stat().st_size / 1e6:.2f} MB")
    t0 = time.time()
    page = out / "page.html"
    page.write_text(page_html([rec]))
    print(f"page: {page.stat().st_size / 1e6:.2f} MB, built in {time.time() - t0:.2f} s")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
      print("no chromium on PATH: no paint time")
      return
    for _ in range(args.repeats):
      done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={out}/prof",
                             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
      marks = dict(re.findall(r'data-first-(render|paint)-ms="([\d.]+)"', done.stdout))
      print(f"first render {marks.get('render')} ms, first paint {marks.get('paint')} ms after navigation start")


if __name__ == "__main__":
  main()
