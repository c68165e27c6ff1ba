#!/usr/bin/env bash
# The prepared GPU check of issue 11 (about 10 minutes on one GPU). From the repo root of a CUDA machine:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# It needs torch with CUDA and ulbench's dependencies importable (pip install -e . or PYTHONPATH=. with the
# packages of pyproject.toml present); step 0 says what is missing. Every step has its own timeout, so one
# failure does not eat the budget; each prints what it measured and the script ends with a summary of exit codes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out="${1:-${OUT:-/tmp/ulbench-gpu-check}}"
mkdir -p "$out"
declare -A rc

echo "== 0. environment"
python - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", "capability", f"{p.major}.{p.minor}")
missing = [m for m in ("torch_fidelity", "cleanfid", "lpips", "diffusers", "fvcore", "skimage", "pandas", "seaborn",
                       "safetensors", "click", "yaml", "tabulate", "decord", "av") if importlib.util.find_spec(m) is None]
print("missing python packages:", missing or "none")
PY

echo "== 1. CUDA tests: loop on cuda = cpu (every trainer), eval on cuda = cpu"
timeout 180 python -m pytest -q -p no:cacheprovider tests/test_training_loop.py tests/test_device_eval.py -k cuda \
  2>&1 | tail -15; rc[tests]=$?

echo "== 2. smoke suite on cuda, bf16"
( time timeout 240 python -m ulbench run --suite smoke --out "$out/smoke" --device cuda --precision bf16 ) \
  > "$out/smoke.log" 2>&1; rc[smoke]=$?
tail -25 "$out/smoke.log"

echo "== 3. engine benchmark, tiny and small presets, bf16 (preset batches)"
timeout 150 python benchmarks/bench_engine.py --device cuda --precision bf16 --scales tiny,small --batch-small 0 \
  --detectors proxy --json "$out/engine.json"; rc[engine]=$?

echo "== 4. paper-scale UL stage 1 at the largest batch that fits (512 px, 32x32 latents)"
rc[paper]=1
for b in 64 32 16 8 4; do
  if timeout 120 python benchmarks/bench_engine.py --device cuda --precision bf16 --scales paper --batch-paper "$b" \
      --repeats 3 --detectors "" --json "$out/paper.json" 2>"$out/paper_b$b.err"; then
    rc[paper]=0; echo "largest batch that fit: $b"; break
  fi
  grep -m1 -i "out of memory" "$out/paper_b$b.err" || tail -3 "$out/paper_b$b.err"
done

echo "== summary (exit codes)"
for k in tests smoke engine paper; do echo "$k: ${rc[$k]}"; done
