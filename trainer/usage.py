"""How to launch ``python -m trainer`` (shown by ``--help``): one CPU, GPUs, nodes, elastic restarts."""

USAGE = """SlotCon pretraining: ``slotcon train`` / ``python -m trainer``. The same code runs everywhere.

One CPU (the demo; data from ``slotcon synth --out data/synthetic``)::

    python -m trainer --preset cpu-demo --data data/synthetic --output-dir runs/cpu-demo

One GPU::

    python -m trainer --preset coco-r50-800ep --data /data/coco --output-dir runs/coco --device cuda

8 GPUs on one node (batch 512 in total, 64 per GPU)::

    torchrun --standalone --nproc_per_node=8 -m trainer --preset coco-r50-800ep --data /data/coco \\
        --output-dir runs/coco

2 nodes × 8 GPUs (run on each node; NODE_RANK 0 and 1, HOST = the first node's address)::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK --rdzv_backend=c10d \\
        --rdzv_endpoint=$HOST:29500 --rdzv_id=slotcon -m trainer --preset coco-r50-800ep \\
        --data /data/coco --output-dir runs/coco

Elastic: restart every process after a failure (up to 3 times), each resuming from the last checkpoint::

    torchrun --standalone --nproc_per_node=8 --max-restarts=3 -m trainer --preset coco-r50-800ep \\
        --data /data/coco --output-dir runs/coco --auto-resume

2 CPU processes (gloo; SyncBatchNorm's statistics and collectives as on GPUs): ``torchrun --standalone
--nproc_per_node=2 -m trainer --preset cpu-demo --threads 1 ...``. Every rank takes each decision that leads to
a collective together with the others; ``--record-collectives DIR`` writes what each rank issued, and a
collective that fails or times out (``--dist-timeout-minutes``) names the step it was in (docs/distributed.md).
Resume with ``--resume runs/coco/current.pth`` (also a release checkpoint: weights, LARS momentum, grad
scaler, epoch) or ``--auto-resume``. SIGTERM/SIGINT save ``current.pth`` and exit 0; ``--max-steps`` caps a run;
``--print-config`` shows the resolved config.

``--precision auto`` (the default) trains on GPUs in fp16 with the grad scaler, as the release does (bf16 only
with ``--precision bf16``); on a CPU it takes bf16 where the CPU computes it natively (AVX-512 BF16, AMX) and fp32
elsewhere. ``--fast`` keeps ``auto`` (so fp16 on a GPU) and adds channels_last and the tensor augmentation.
Non-finite steps are skipped on every rank (20 in a row stop the run). The choice and its reason go to the
first log line, ``config.yaml`` and the checkpoints. ``--budget-minutes M`` times the
first steps and then fixes the total number of steps (at most the epochs allow) so that training ends
within M minutes with every schedule (warm-up, cosine lr, teacher momentum to 1) completed; the fixed
total is recorded, so ``--resume`` continues exactly. ``--print-plan`` prints the precision and budget a
run would use on this machine, without training.
"""
