#!/usr/bin/env bash
# Every GPU figure of benchmarks/RESULTS.md in one command, within 9.5 minutes on one
# H100/H200 (the parts' limits add up to 560 s), one JSON report per part in OUT_DIR:
#
#   bash benchmarks/gpu_suite.sh OUT_DIR
#
# Runs from the repository root with whatever python3 holds torch and torchvision (the
# trainer's sources are put on PYTHONPATH, nothing is installed). Each part has its own
# time limit, so one that hangs or runs long costs only its own figures; the summary at
# the end says which parts finished. Parts, in order of what they decide:
#   eager     the six eager modes and amp+cl with the multi-tensor SGD, against the plain
#             loop (synthetic data, batch 256)
#   jpeg      amp+cl on the real JPEG pipeline (pytorch and gpu backends, and each loader
#             alone) against synthetic data in the same run; 20,000 generated JPEGs
#   compile   amp+cl compiled, plain and with CUDA graphs (reduce-overhead)
#   batch     amp+cl at batch 128 and 512 (256 is in eager)
#   decode    benchmarks/decode.py: decode + augment per CPU core of this machine
#
# SUITE_SCALE=smoke shrinks every part to seconds on a CPU, to check the script itself.
set -uo pipefail

out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "${out}"
export PYTHONPATH="${root}/trainer${PYTHONPATH:+:${PYTHONPATH}}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
bench=("${python}" "${root}/benchmarks/throughput.py")
jpegs=${JPEG_DIR:-${TMPDIR:-/tmp}/resnet50-bench-jpegs}
cores=$(nproc)

if [[ ${SUITE_SCALE:-full} == smoke ]]; then
  common=(--image-size 32 --batch-size 4 --warmup 1 --steps 2 --windows 2 --model resnet18
          --device cpu)
  batches=(4 8); jpeg_count=24; limit_scale=4; decode=(--images 16 --batch 8 --warmup 1 --windows 2
          --images-per-window 16 --crop 32)
else
  # 8 warm-up steps (cuDNN autotuning, compilation, CUDA graph capture), 3 x 15 timed
  common=(--warmup 8 --steps 15 --windows 3)
  batches=(128 512); jpeg_count=20000; limit_scale=1; decode=(--images 500 --windows 3)
fi

declare -A took status
part() {  # NAME SECONDS COMMAND...: run one part under its time limit
  local name=$1 seconds=$(( $2 * limit_scale )) start=${SECONDS}
  shift 2
  echo "==> ${name} (at most ${seconds} s): $*"
  timeout --signal=INT --kill-after=20 "${seconds}" "$@" 2>&1 | tee "${out}/${name}.log"
  status[${name}]=${PIPESTATUS[0]}
  took[${name}]=$(( SECONDS - start ))
}

part eager 120 "${bench[@]}" "${common[@]}" --modes fp32 fp32+cl amp amp+cl bf16 bf16+cl \
  amp+cl+foreach --json "${out}/eager.json"
part jpeg 150 "${bench[@]}" "${common[@]}" --modes amp+cl --data synthetic pytorch gpu \
  --make-jpegs "${jpeg_count}" --jpeg-dir "${jpegs}" --workers "${cores}" \
  --json "${out}/jpeg.json"
part compile 180 "${bench[@]}" "${common[@]}" --modes amp+cl+compile \
  amp+cl+compile=reduce-overhead --json "${out}/compile.json"
for b in "${batches[@]}"; do
  part "batch-${b}" 30 "${bench[@]}" "${common[@]}" --modes amp+cl --batch-size "${b}" \
    --json "${out}/batch-${b}.json"
done
part decode 50 "${python}" "${root}/benchmarks/decode.py" "${decode[@]}" \
  --jpeg-dir "${jpegs}-photos" --json "${out}/decode.json"

echo "==> summary (exit status 0: finished; 124: stopped at its time limit)"
for name in "${!took[@]}"; do
  printf '    %-10s exit %3s  %4d s\n' "${name}" "${status[${name}]}" "${took[${name}]}"
done | sort
