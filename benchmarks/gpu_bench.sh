#!/usr/bin/env bash
# GPU figures of the speed benchmarks in one call (docs/performance.md), for a lent machine
# whose image has JAX with CUDA but not grain / ml-collections / tfds: those travel as wheels in
# .whl/ (see .library/device/README.md; flax and optax are carried too, so both machines run the
# same versions of them). Writes every log under $OUT (or /tmp/gpu_bench), named by what, where
# and when as under results/gpu/: <bench>_<gpu>_<YYYY-MM>[_<variant>].txt, e.g.
# step_bench_h100_2026-11_kitti.txt (the GPU's model from nvidia-smi; set HW=... to override).
#
#   bash benchmarks/gpu_bench.sh              # every part below
#   bash benchmarks/gpu_bench.sh kr pallas    # only the parts named (kr default kitti pallas logit)
set -o pipefail
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
out=${OUT:-/tmp/gpu_bench}
mkdir -p "$out"
hw=${HW:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk '{print tolower($2)}')}
tag=${hw:-gpu}_$(date -u +%Y-%m)
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"; } 2>&1 | tee "$out/machine_$tag.txt"

parts=" ${*:-kr default kitti pallas logit} "
want() { [[ "$parts" == *" $1 "* ]]; }

# 0. ARFD's kernel regression alone, XLA against the fused Pallas kernel (block and warp sweep),
#    at the KITTI-scale taps of step 2: the decoder tap (32 channels) and stage 3 (256), B = 32,
#    stride-2 keys; and the decoder tap of a 4x wider decoder (128 channels).
if want kr; then
  timeout 120 python3 benchmarks/kr_bench.py 2>&1 | tee "$out/kr_bench_${tag}_decoder_c32.txt"
  timeout 120 python3 benchmarks/kr_bench.py --shape 32 12288 3072 128 2>&1 \
    | tee "$out/kr_bench_${tag}_decoder_c128.txt"
  timeout 90 python3 benchmarks/kr_bench.py --shape 32 768 192 256 2>&1 \
    | tee "$out/kr_bench_${tag}_stage3.txt"
fi
# 1. The CPU benchmark's sizes (configs/synthetic.py default: 64x192, widths 0.25, B 16 + U 16),
#    with one grain read thread per core (the CPU default of 2 starves the GPU).
want default && timeout 200 python3 benchmarks/step_bench.py --no_scaling \
  --set data.num_threads=16 2>&1 | tee "$out/step_bench_${tag}_64x192.txt"
# 2. KITTI-scale crops, full-width networks in bfloat16, the XLA kernel regression with blocks of
#    4096 (a few large blocks; 256 -- the CPU default -- makes hundreds of sequential small ones).
want kitti && timeout 200 python3 benchmarks/step_bench.py --no_scaling --no_loop --iters 20 \
  --set 'data.crop_hw=(256,768)' --set teacher.width=1.0 --set student.width=1.0 \
  --set teacher.dtype=bfloat16 --set student.dtype=bfloat16 --set distill.kr_block_size=4096 \
  --set distill.kr_impl=xla --diag_kr_block 256 2>&1 | tee "$out/step_bench_${tag}_kitti_xla.txt"
# 2b. The same with the fused Pallas kernel regression (lix_jax/kr_fused.py; `auto`, the default,
#     picks it for the decoder tap on GPUs). Its diagnostic ARFD row is the XLA path with
#     4096-blocks, in the same run.
want pallas && timeout 200 python3 benchmarks/step_bench.py --no_scaling --no_loop --iters 20 \
  --set 'data.crop_hw=(256,768)' --set teacher.width=1.0 --set student.width=1.0 \
  --set teacher.dtype=bfloat16 --set student.dtype=bfloat16 --set distill.kr_impl=pallas \
  --diag_kr_block 4096 2>&1 | tee "$out/step_bench_${tag}_kitti.txt"
# 3. The logit losses alone at the step's shape and at a Cityscapes-like one.
want logit || exit 0
timeout 60 python3 benchmarks/logit_bench.py --iters 20 2>&1 | tee "$out/logit_bench_$tag.txt"
timeout 60 python3 benchmarks/logit_bench.py --iters 20 --shape 8 512 1024 19 2>&1 \
  | tee "$out/logit_bench_${tag}_cityscapes.txt"
