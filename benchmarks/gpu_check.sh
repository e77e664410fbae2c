#!/usr/bin/env bash
# Every GPU check of the CUDA engine in one call, sized to end within 8 minutes on one H100 or H200:
# the suite on CUDA, the headline job, the automatic batch size, fv against Lucent on the same card,
# and the torch.compile decision. Each stage has its own time limit, so a slow stage cannot eat the
# others' time. Results go to $OUT (the device tool's folder that comes back), one file a stage.
#
# Here, before the call:  bash benchmarks/install_lucent.sh   (Lucent travels as benchmarks/.lucent)
# The call (device tool): bash benchmarks/gpu_check.sh          with carry: ["benchmarks/.lucent"]
# One stage only:         STAGES="headline bench" bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
STAGES=${STAGES:-"suite headline batch bench compile"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} FV_CACHE_DIR=$OUT/cache
stage() { [[ " $STAGES " == *" $1 "* ]]; }
sidecar() { python -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d[k] for k in ('engine', 'timing')}))" "$1"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
  git rev-parse --short HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/card.txt"

if stage suite; then  # the CPU-promise tests run on the CPU (FV_DEVICE=cpu); tests/test_devices.py on the GPU
  timeout 140 python -m pytest -q -p no:cacheprovider -n 8 --deselect tests/test_atlas_browser.py 2>&1 | tail -25 > "$OUT/suite.txt"
  tail -3 "$OUT/suite.txt"
fi

if stage headline; then  # the mission's main job: the whole process, and the rendering alone
  start=$(date +%s%N)
  timeout 50 python -m fvcli render mixed4a:0-511 --weights random --steps 512 --size 128 --out "$OUT/headline" -q
  echo "headline: exit $?, whole process $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee "$OUT/headline.txt"
  sidecar "$OUT/headline/googlenet/mixed4a/grid.json" | tee -a "$OUT/headline.txt"
fi

if stage batch; then  # the automatic batch size (two-step memory probe): GoogLeNet at 128 and 224 px, a ViT
  for args in "mixed4a:0-511 --size 128" "mixed4a:0-511 --size 224" "encoder.layers.encoder_layer_6:0-767 --model vit_b_16 --size 224"; do
    rm -rf "$OUT/batch"
    timeout 15 python -m fvcli render $args --weights random --steps 2 --out "$OUT/batch" -q
    echo "$args: $(python -c "import json,glob; print(json.load(open(glob.glob('$OUT/batch/**/grid.json', recursive=True)[0]))['timing']['batch_sizes'])" 2>&1)"
  done 2>&1 | tee "$OUT/batch.txt"
fi

if stage bench; then  # fv and Lucent's batched mode (chunks of 64) on the same 512 units, and the 8-bit objectives
  timeout 140 python benchmarks/bench.py --units 512 --steps 512 --size 128 --device cuda --vs-lucent --lucent-batched-only > "$OUT/bench.json" 2> "$OUT/bench.err"
  echo "bench: exit $?"; cat "$OUT/bench.json"; tail -3 "$OUT/bench.err"
fi

if stage compile; then  # does torch.compile pay for a 512 x 512 job? default and max-autotune, side by side with eager
  timeout 80 python benchmarks/bench.py --units 512 --steps 8 --size 128 --device cuda --compile-probe \
    --compile-modes default,max-autotune-no-cudagraphs --compile-steps 64 > "$OUT/compile.json" 2> "$OUT/compile.err"
  echo "compile: exit $?"; cat "$OUT/compile.json"; tail -3 "$OUT/compile.err"
fi
