#!/usr/bin/env bash
# Behaviour check for refactors: a cpu-demo run of a fixed number of steps in fp32, its index and the
# synthetic-protocol evaluation, ending in one JSON line of scores. Run it on two checkouts and compare the
# scores (they should agree within 1e-4).
#
#   bash bench/score_check.sh [OUT_DIR] [STEPS]      (from the checkout to check; python: .venv/bin/python
#                                                     or $PY)
set -euo pipefail
OUT=${1:-/tmp/slotcon-score-check}
STEPS=${2:-40}
PY=${PY:-.venv/bin/python}
export SLOTCON_INFER_PRECISION=fp32 CUBLAS_WORKSPACE_CONFIG=:4096:8
rm -rf "$OUT" && mkdir -p "$OUT"
"$PY" -m core.synthetic --out "$OUT/data" >/dev/null
"$PY" -m trainer --preset cpu-demo --data "$OUT/data" --output-dir "$OUT/run" --total-steps "$STEPS" \
    --precision fp32 --workers 0 --seed 0 --log-every 10 >"$OUT/train.log" 2>&1
CKPT=$(ls "$OUT"/run/final.pth 2>/dev/null || ls -t "$OUT"/run/*.pth | head -1)
"$PY" -m indexer --checkpoint "$CKPT" --data "$OUT/data" --split val2017 --out "$OUT/index" >"$OUT/index.log" 2>&1
"$PY" -m indexer.eval_cli --checkpoint "$CKPT" --data "$OUT/data" --protocol synthetic --baseline none \
    --index "$OUT/index" --out "$OUT/eval.json" >"$OUT/eval.log" 2>&1
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
ev = json.loads((out / "eval.json").read_text())
ck = torch.load(next(iter(sorted((out / "run").glob("final.pth")) or sorted((out / "run").glob("*.pth")))),
                map_location="cpu", weights_only=False)
state = ck.get("model", ck)
checksum = float(sum(v.double().abs().sum() for v in state.values() if torch.is_tensor(v) and v.is_floating_point()))
print(json.dumps({"miou": ev.get("miou"), "pixel_accuracy": ev.get("pixel_accuracy"),
                  "per_class_iou": ev.get("per_class_iou"), "weights_abs_sum": checksum}))
PYEOF
