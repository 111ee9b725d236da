#!/usr/bin/env bash
# The device checks, in one short run on a machine with one NVIDIA GPU (see README "GPU checks").
# Expects pre-generated synthetic data at data/gpu-synth (python -m slotcon synth --out data/gpu-synth
# --num-train 512 --num-val 16 --size 256) because the GPU image has no pycocotools.
# Writes JSON lines to $OUT/gpu.jsonl (or ./gpu.jsonl).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}/gpu.jsonl
: > "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out"
python3 bench/cuda_parity.py | tee -a "$out"
for args in "--precision fp32" "--precision fp16" "--precision bf16" "--precision bf16 --channels-last" \
            "--precision fp16 --baseline"; do
  timeout 120 python3 bench/train_throughput.py --preset coco-r50-800ep --arch resnet50 --image-size 224 \
    --batch-size 64 --device cuda --data data/gpu-synth --workers 12 --steps 10 --warmup 3 $args \
    | tail -1 | tee -a "$out"
done
# the index's inference network (teacher + projector + prototype scores) at batch 256 in fp16 and bf16
# against the release's fp32 model (a whole index build needs pycocotools, which this machine lacks)
for prec in fp16 bf16; do
  timeout 90 python3 bench/index_throughput.py --network-only --device cuda --arch resnet50 --batch-size 256 \
    --precision $prec --network-rounds 5 | tail -1 | tee -a "$out"
done
# DDP + SyncBN + NCCL + fp16 scaler through torchrun (one process on the one GPU), then resume
run=/tmp/gpu-run
rm -rf $run
timeout 150 torchrun --standalone --nproc_per_node=1 -m trainer --preset cpu-demo --data data/gpu-synth \
  --output-dir $run --device cuda --precision fp16 --batch-size 32 --max-steps 30 --epochs 4 --workers 8 \
  --log-every 5 --progress log > /tmp/ddp1.log 2>&1; echo "{\"ddp_run_rc\": $?}" | tee -a "$out"
tail -3 $run/metrics.jsonl | tee -a "$out"
timeout 100 torchrun --standalone --nproc_per_node=1 -m trainer --preset cpu-demo --data data/gpu-synth \
  --output-dir $run --device cuda --precision fp16 --batch-size 32 --max-steps 40 --epochs 4 --workers 8 \
  --log-every 5 --progress log --auto-resume > /tmp/ddp2.log 2>&1; echo "{\"ddp_resume_rc\": $?}" | tee -a "$out"
tail -2 $run/metrics.jsonl | tee -a "$out"
tail -5 /tmp/ddp1.log /tmp/ddp2.log
