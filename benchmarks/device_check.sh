#!/usr/bin/env bash
# One command for anyone with an accelerator (DESIGN §7): install tcred with the accelerator's JAX extra,
# run the test suite, one short `tcred run` of an embedded experiment (and of a real-model experiment when
# one is registered), and the performance benchmarks, writing every report beside the CPU figures:
# benchmarks/results/device-<platform>/ (run_all.md, train_step.md, sampler.md, ..., device_check.md).
# About 8 minutes on one modern GPU.
#
#   bash benchmarks/device_check.sh                 # detect the accelerator, do everything
#   bash benchmarks/device_check.sh --dry-run       # print the plan and check its inputs (passes on CPU)
#   options: --platform cuda|tpu|cpu   --python PY   --skip-install   --skip-tests   --out DIR
#            --real-experiment NAME (default jsonl-grpo)   --checkpoint DIR (a Hugging Face checkpoint for it;
#            default: a tiny random Qwen3 built here)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root" || exit 2

dry_run=0; platform=""; python="${PYTHON:-python}"; skip_install=0; skip_tests=0; out=""; real=""; checkpoint=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --platform) platform="$2"; shift ;;
    --python) python="$2"; shift ;;
    --skip-install) skip_install=1 ;;
    --skip-tests) skip_tests=1 ;;
    --out) out="$2"; shift ;;
    --real-experiment) real="$2"; shift ;;
    --checkpoint) checkpoint="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown option $1 (allowed: --dry-run --platform --python --skip-install" \
            "--skip-tests --out --real-experiment --checkpoint)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$platform" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then platform=cuda
  elif ls /dev/accel0 /dev/vfio/0 >/dev/null 2>&1 || [ -n "${TPU_NAME:-}" ]; then platform=tpu
  else platform=cpu
  fi
fi
case "$platform" in
  cuda) jax_backend=gpu; extra=cuda ;;
  tpu) jax_backend=tpu; extra=tpu ;;
  cpu) jax_backend=cpu; extra="" ;;
  *) echo "device_check.sh: --platform must be cuda, tpu or cpu, got $platform" >&2; exit 2 ;;
esac
if [ "$platform" = cpu ] && [ $dry_run = 0 ]; then
  echo "device_check.sh: no accelerator found (no nvidia-smi GPU, no TPU); pass --platform cpu to check on CPU" \
       "anyway, or --dry-run to see the plan" >&2
  [ "${DEVICE_CHECK_ALLOW_CPU:-0}" = 1 ] || exit 2
fi
out="${out:-benchmarks/results/device-$platform}"
report="$out/device_check.md"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the tests start many JAX programs on one accelerator
work="${TMPDIR:-/tmp}/tcred-device-check"  # run directories and base-policy cache (not reports)
export TCRED_CACHE="${TCRED_CACHE:-$work/cache}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not

failed=0
steps=()
step() {  # step NAME COMMAND...: runs (or, with --dry-run, prints) one step and records its time and status
  local name="$1"; shift
  echo "== $name: $*"
  if [ $dry_run = 1 ]; then steps+=("| $name | planned | – | \`$*\` |"); return 0; fi
  local t0=$SECONDS
  "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  local status=ok; [ "$rc" = 0 ] || { status="FAILED (exit $rc)"; failed=1; }
  steps+=("| $name | $status | $((SECONDS - t0)) | \`$*\` |")
}
skip() {  # skip NAME REASON
  echo "== $1: skipped: $2"
  steps+=("| $1 | skipped: $2 | – | |")
}

[ $dry_run = 1 ] || mkdir -p "$out"
# 1. JAX for the accelerator (kept when the installed JAX already sees it: offline machines, preinstalled images).
if [ $skip_install = 1 ]; then
  skip install "--skip-install"
elif "$python" -c "import jax, sys; sys.exit(jax.default_backend() != '$jax_backend')" >/dev/null 2>&1; then
  skip install "the installed JAX already runs on $jax_backend (this checkout is on PYTHONPATH)"
else
  step install "$python" -m pip install -q -e ".[test${extra:+,$extra}]"
fi
if [ $dry_run = 0 ]; then
  "$python" -c "import jax, sys; print('JAX', jax.__version__, jax.devices()); sys.exit(jax.default_backend() != '$jax_backend')" \
    || { echo "device_check.sh: JAX does not run on $jax_backend after the install" >&2; exit 1; }
fi

# 2. The test suite (the default run: slow tests deselected).
if [ $skip_tests = 1 ]; then skip tests "--skip-tests"; else step tests "$python" -m pytest -x -q -p no:cacheprovider; fi

# 3. One short run of an embedded experiment, and of a real-model experiment when one is registered.
short=(--steps 3 --seed 0 --no-progress --out "$work/runs" --set sft.steps=300 --set rl.prompts_per_step=8
       --set rl.group_size=4 --set rl.final_eval_prompts=8 --set rl.final_eval_samples=2 --set rl.eval_prompts=4
       --set rl.eval_samples=2 --set rl.eval_every=3)
step run-embedded "$python" -m tcred.cli run countdown-grpo "${short[@]}"
# The CLI and the experiment registry load (the dry run's check too). The real-model run is `$real` (default
# jsonl-grpo) on --checkpoint DIR, or, without one, on a tiny random Qwen3 with a locally trained BPE tokenizer
# (`tcred.testing.tiny_hf`, which needs torch), over a generated question file: the checkpoint path, the HF
# tokenizer and chat template, the EOS ids and the jsonl task all run on the accelerator.
found="$("$python" -c 'import tcred.cli; from tcred import experiments; print(len(experiments.experiment_names()))')" \
  || { echo "device_check.sh: tcred does not import (python: $python)" >&2; exit 1; }
echo "== registry: $found experiments"
real="${real:-jsonl-grpo}"
qa="$work/qa.jsonl"
if [ -z "$checkpoint" ]; then
  checkpoint="$work/tiny-qwen3"
  step tiny-checkpoint "$python" -c "
import json, pathlib, sys
from tcred.testing.tiny_hf import write_tiny_qwen3
qa = [{'question': f'What is {a} + {b}?', 'answer': str(a + b)} for a in range(8) for b in range(8)]
pathlib.Path('$qa').parent.mkdir(parents=True, exist_ok=True)
pathlib.Path('$qa').write_text(''.join(json.dumps(q) + chr(10) for q in qa))
write_tiny_qwen3('$checkpoint', [q['question'] + ' ' + q['answer'] for q in qa])"
else
  step questions "$python" -c "
import json, pathlib
pathlib.Path('$qa').parent.mkdir(parents=True, exist_ok=True)
pathlib.Path('$qa').write_text(''.join(json.dumps({'question': f'What is {a} + {b}?', 'answer': str(a + b)}) + chr(10)
                                       for a in range(8) for b in range(8)))"
fi
step run-real-model "$python" -m tcred.cli run "$real" --steps 2 --seed 0 --no-progress --out "$work/runs" \
  --set "task_config.checkpoint=$checkpoint" --set "task_config.path=$qa" --set task_config.max_response_len=32 \
  --set rl.prompts_per_step=4 --set rl.group_size=4 --set rl.final_eval_prompts=8 --set rl.final_eval_samples=2 \
  --set rl.eval_prompts=4 --set rl.eval_samples=2 --set rl.eval_every=2

# 4. The performance benchmarks (full sizes), reports in $out beside the CPU ones in benchmarks/results/.
step benchmarks "$python" benchmarks/run_all.py --out-dir "$out"

# The summary.
if [ $dry_run = 1 ]; then
  printf '%s\n' "device_check.sh --dry-run: platform $platform, reports would go to $out/" "${steps[@]}"
  for f in benchmarks/run_all.py tcred/cli.py; do [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }; done
  echo "device_check.sh --dry-run: ok"
  exit 0
fi
{
  echo "# Device check ($platform)"
  echo
  echo "Command: \`bash benchmarks/device_check.sh $*\` at $(git rev-parse --short HEAD 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- devices: $("$python" -c 'import jax; print(jax.__version__, jax.devices())' 2>&1)"
  command -v nvidia-smi >/dev/null 2>&1 && echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  echo "- total: ${SECONDS} s"
  echo
  echo "| step | status | seconds | command |"
  echo "|---|---|---:|---|"
  printf '%s\n' "${steps[@]}"
  echo
  echo "Logs: \`$out/<step>.log\`; benchmark reports: \`$out/run_all.md\` and the reports it lists."
} > "$report"
cat "$report"
exit $failed
