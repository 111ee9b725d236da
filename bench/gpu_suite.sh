#!/usr/bin/env bash
# The device checks in one short run (about 5 minutes on one GPU, so it fits twice in a short lease).
# Writes JSON lines to $OUT/gpu.jsonl (or ./gpu.jsonl) and a summary at the end.
#
#   bash bench/gpu_suite.sh                 # on a machine with one or more NVIDIA GPUs
#   DRY_RUN=1 bash bench/gpu_suite.sh       # the same steps on the CPU at toy sizes (checks the script itself)
#
# Steps: CUDA/CPU parity; the recipe's training step (coco-r50-800ep: R50 at 224, batch 64) in fp16 and bf16
# against the release's step at the same precision (images/s, peak memory); the bf16 alignment check on the
# device; a short fp16 run with the grad scaler through torchrun, then its resume. With 2+ GPUs also: the
# multi-rank tests with NCCL and PyTorch's own SyncBatchNorm (two processes on two GPUs; one GPU cannot host
# two NCCL ranks, so on one GPU this step says so and is skipped). Data: synthetic scenes made at the start
# unless data/gpu-synth exists (pycocotools needed to make them).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=${OUT:-.}/gpu.jsonl
: > "$out"
export PYTHONUNBUFFERED=1
started=$(date +%s)
note() { echo "{\"step\": \"$1\", \"rc\": $2, \"seconds\": $(( $(date +%s) - started ))}" | tee -a "$out"; }

if [ "${DRY_RUN:-0}" = 1 ]; then
  device=cpu; arch=resnet18; size=64; batch=8; steps=3; gpus=0; data=${DATA:-/tmp/gpu-suite-synth}
  extra=(--width 0.25 --dim-hidden 64 --threads 2 --workers 0)
  echo "{\"dry_run\": true, \"cpu\": \"$(lscpu | grep 'Model name' | sed 's/.*: *//')\"}" | tee -a "$out"
else
  device=cuda; arch=resnet50; size=224; batch=64; steps=10; data=${DATA:-data/gpu-synth}
  extra=(--workers 12)
  gpus=$(nvidia-smi -L | wc -l)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out"
fi
if [ ! -d "$data" ]; then
  $PY -m slotcon synth --out "$data" --num-train 512 --num-val 16 --size 256 > /dev/null; note synth $?
fi

if [ "$device" = cuda ]; then timeout 120 $PY bench/cuda_parity.py | tee -a "$out"; note cuda_parity $?; fi

# the recipe's step against the release's step, each at the same precision
for prec in fp16 bf16; do
  for variant in "" "--baseline"; do
    timeout 150 $PY bench/train_throughput.py --preset coco-r50-800ep --arch $arch --image-size $size \
      --batch-size $batch --device $device --data "$data" --steps $steps --warmup 2 --precision $prec \
      "${extra[@]}" $variant | tail -1 | tee -a "$out"
    note "train_step_${prec}${variant:+_release}" $?
  done
done

timeout 60 $PY bench/bf16_alignment.py --device $device --batch-size 1024 | tee -a "$out"; note bf16_alignment $?

# a short fp16 run with the grad scaler through torchrun (one process), then its resume
run=/tmp/gpu-suite-run
rm -rf $run
common=(--preset cpu-demo --data "$data" --output-dir $run --device $device --precision fp16 --batch-size 32
        --epochs 4 --log-every 5 --progress log --budget-minutes 0 --record-collectives $run/collectives)
[ "$device" = cpu ] && common+=(--batch-size 8 --image-size 64 --threads 2 --workers 0)
timeout 150 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m trainer "${common[@]}" --max-steps 30 \
  > /tmp/gpu-suite-run1.log 2>&1; note fp16_run $?
tail -2 $run/metrics.jsonl | tee -a "$out"
timeout 100 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m trainer "${common[@]}" --max-steps 40 \
  --auto-resume > /tmp/gpu-suite-run2.log 2>&1; note fp16_resume $?
tail -2 $run/metrics.jsonl | tee -a "$out"
grep -h "precision\|resumed\|not restored" /tmp/gpu-suite-run1.log /tmp/gpu-suite-run2.log | tail -4

# several GPUs: NCCL ranks with PyTorch's SyncBatchNorm, collectives recorded and compared
if [ "$gpus" -ge 2 ]; then
  run2=/tmp/gpu-suite-ddp
  rm -rf $run2
  timeout 200 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m trainer --preset cpu-demo \
    --data "$data" --output-dir $run2 --device cuda --precision fp16 --batch-size 64 --max-steps 30 --epochs 4 \
    --log-seconds 0.05 --progress log --budget-minutes 0 --record-collectives $run2/collectives \
    > /tmp/gpu-suite-ddp.log 2>&1; note nccl_two_ranks $?
  $PY -c "from trainer.collectives import compare_ranks, read_record as r
print(compare_ranks([r('$run2/collectives/collectives-rank%d.jsonl' % i) for i in (0, 1)]) or 'identical')" \
    | tee -a "$out"
  timeout 200 $PY -m pytest -q tests/trainer/test_distributed.py -m gpu 2>&1 | tail -2 | tee -a "$out"
else
  echo "{\"step\": \"nccl_two_ranks\", \"skipped\": \"$gpus GPU(s): two NCCL ranks need two GPUs\"}" | tee -a "$out"
fi
note done 0
