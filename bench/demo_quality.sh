#!/usr/bin/env bash
# Demo-quality trial: train the cpu-demo preset for STEPS steps with extra trainer flags, then score the
# grouping on the synthetic val split (Hungarian, K = classes) at RES px (default 320, as slotcon eval). Prints one line.
#   bench/demo_quality.sh NAME STEPS [trainer flags...]      e.g. bench/demo_quality.sh tt04 150 --teacher-temp 0.04
# DATA (default data/synthetic, generated when missing), WORK (default /tmp/demo-quality) and RES from the env.
set -uo pipefail
cd "$(dirname "$0")/.."
name=$1; steps=$2; shift 2
data=${DATA:-data/synthetic}; work=${WORK:-/tmp/demo-quality}; res=${RES:-320}
py=.venv/bin/python
[ -d "$data/val2017" ] || $py -m core.cli synth --out "$data" >/dev/null
out=$work/$name; rm -rf "$out"; mkdir -p "$work"
start=$(date +%s)
$py -m trainer --preset cpu-demo --data "$data" --output-dir "$out" --max-steps "$steps" --progress log \
  --log-every 25 "$@" > "$work/$name.log" 2>&1
secs=$(( $(date +%s) - start ))
ckpt=$out/final.pth; [ -f "$ckpt" ] || ckpt=$out/current.pth
$py -m indexer.eval_cli --checkpoint "$ckpt" --data "$data" --protocol synthetic --resolution "$res" \
  --out "$work/$name.json" --no-progress > /dev/null 2>&1 || { echo "$name: eval failed (see $work/$name.log)"; exit 1; }
$py - "$work/$name.json" "$name" "$secs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ious = [None if v is None else round(100 * v) for v in r["per_class_iou"]]
print(f"{sys.argv[2]}: train {sys.argv[3]} s, mIoU {100 * r['miou']:.1f}, pAcc {100 * r['pixel_accuracy']:.1f}, IoU {ious}")
PY
