#!/usr/bin/env bash
# One real deployment of docker-compose.yml on a machine that reaches Debian's packages and PyPI but
# no container registry (so no base image can be pulled):
#   1. docker.io, docker-compose, debootstrap and chromium from Debian's packages (when missing);
#      dockerd started when none answers
#   2. slotcon-base:bookworm bootstrapped with debootstrap (python3, python3-venv) and imported
#   3. docker/wheels filled by `pip download` (torch, torchvision, every dependency, build backend)
#   4. the api and ui images built offline: BASE_IMAGE=slotcon-base:bookworm, PIP_INDEX_ARGS=--no-index
#   5. demo data, a short training run and an index made with the init service's image
#   6. the stack brought up and both healthchecks awaited
#   7. the UI loaded in Chromium through the published port (a screenshot is kept), the API's
#      health read through its published port
#   8. the stack brought down and its volumes removed
# Prints one JSON object: the seconds of each step and what was checked. Needs root (apt, dockerd).
#
#   sudo bash scripts/compose_check.sh            # about 14 minutes on 2 cores from nothing cached
#   BASE_IMAGE=python:3.11-slim PIP_INDEX_ARGS= ...  (where a registry and PyPI are reachable)
# The images, the base image and docker/wheels are kept for the next run (remove them with
# `docker rmi slotcon-explorer/api slotcon-explorer/ui slotcon-base:bookworm`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${OUT:-$ROOT/artifacts/compose-check}
mkdir -p "$OUT"
DOCKER=/usr/bin/docker                      # Debian's docker.io client (another may shadow it on PATH)
export DOCKER_HOST=unix:///var/run/docker.sock
export COMPOSE_PROJECT_NAME=slotcon-check
export SLOTCON_API_TOKEN=${SLOTCON_API_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export SLOTCON_API_PORT=${SLOTCON_API_PORT:-18000} SLOTCON_UI_PORT=${SLOTCON_UI_PORT:-18501}
export BASE_IMAGE=${BASE_IMAGE:-slotcon-base:bookworm}
export PIP_INDEX_ARGS=${PIP_INDEX_ARGS:---no-index}
COMPOSE=(docker-compose -f "$ROOT/docker-compose.yml")
declare -A SECONDS_OF
STEPS=()

step() {  # step NAME command...: run it, remember how long it took
  local name=$1 t0
  shift
  t0=$(date +%s.%N)
  echo "[compose-check] $name" >&2
  "$@" >>"$OUT/$name.log" 2>&1 || { echo "[compose-check] FAILED at $name; see $OUT/$name.log" >&2; tail -20 "$OUT/$name.log" >&2; exit 1; }
  SECONDS_OF[$name]=$(echo "$(date +%s.%N) - $t0" | bc)
  STEPS+=("$name")
}

install_tools() {
  local missing=()
  [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v bc >/dev/null || missing+=(bc)
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

start_dockerd() {
  if $DOCKER info >/dev/null 2>&1; then return 0; fi
  nohup /usr/sbin/dockerd --host="$DOCKER_HOST" >"$OUT/dockerd.log" 2>&1 &
  for _ in $(seq 60); do $DOCKER info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "dockerd did not start" >&2
  return 1
}

base_image() {
  if $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  [ "$BASE_IMAGE" = slotcon-base:bookworm ] || $DOCKER pull "$BASE_IMAGE"
  [ "$BASE_IMAGE" = slotcon-base:bookworm ] || return 0
  local rootfs mirror
  rootfs=$(mktemp -d /tmp/slotcon-rootfs.XXXXXX)
  mirror=$(grep -hoE '^URIs: *\S+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
    "${mirror:-http://deb.debian.org/debian}"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | $DOCKER import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
  rm -rf "$rootfs"
}

wheels() {
  "$PY" -m pip download -q -d docker/wheels "torch==2.14.1" "torchvision==0.29.1" "setuptools>=68" wheel .
  rm -f docker/wheels/slotcon_explorer-*
}

init_data() {  # small demo data, a few training steps, an index: what the api serves
  "${COMPOSE[@]}" run --rm init python -m slotcon synth --out /data/synthetic --num-train 64 --num-val 16
  "${COMPOSE[@]}" run --rm init python -m trainer --preset cpu-demo --data /data/synthetic \
    --output-dir /runs/cpu-demo --max-steps 4 --batch-size 16 --workers 0
  "${COMPOSE[@]}" run --rm init sh -c 'python -m indexer --checkpoint "$(ls /runs/cpu-demo/final.pth \
    /runs/cpu-demo/current.pth 2>/dev/null | head -1)" --data /data/synthetic --split val2017 --out /indexes/cpu-demo'
}

wait_healthy() {
  local deadline=$((SECONDS + 600)) api ui
  while [ $SECONDS -lt $deadline ]; do
    api=$($DOCKER inspect -f '{{.State.Health.Status}}' "$("${COMPOSE[@]}" ps -q api)")
    ui=$($DOCKER inspect -f '{{.State.Health.Status}}' "$("${COMPOSE[@]}" ps -q ui)")
    echo "api=$api ui=$ui"
    [ "$api" = healthy ] && [ "$ui" = healthy ] && return 0
    sleep 3
  done
  "${COMPOSE[@]}" logs --tail 50
  return 1
}

browser_check() {  # the UI through its published port, in Debian's Chromium; the API's health too
  "$PY" - "$SLOTCON_UI_PORT" "$SLOTCON_API_PORT" "$OUT" <<'EOF'
import json, sys, time, urllib.request
from playwright.sync_api import sync_playwright

ui_port, api_port, out = sys.argv[1], sys.argv[2], sys.argv[3]
health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/health", timeout=30))
assert health["index"]["name"] == "cpu-demo" and health["auth_required"], health
args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    started = time.time()
    page.goto(f"http://127.0.0.1:{ui_port}/", wait_until="networkidle", timeout=120_000)
    page.get_by_text("cpu-demo").first.wait_for(timeout=120_000)  # the sidebar names the API's index
    page.locator("button").filter(has_text="Open").first.wait_for(timeout=120_000)  # concept cards drawn
    page.screenshot(path=f"{out}/ui.png", full_page=True)
    print(json.dumps({"ui_loaded_s": round(time.time() - started, 1), "index": health["index"]["name"],
                      "images": health["index"]["num_images"]}))
    browser.close()
EOF
}

step install_tools install_tools
step start_dockerd start_dockerd
step base_image base_image
step wheels wheels
step build "${COMPOSE[@]}" build api ui
step init_data init_data
step up "${COMPOSE[@]}" up -d api ui
step healthy wait_healthy
step browser browser_check
step down "${COMPOSE[@]}" down -v --remove-orphans

{
  echo "{"
  echo "  \"base_image\": \"$BASE_IMAGE\", \"docker\": \"$($DOCKER version -f '{{.Server.Version}}')\","
  echo "  \"compose\": \"$(docker-compose version --short)\", \"cpu\": \"$(lscpu | sed -n 's/^Model name: *//p')\","
  echo "  \"images_mb\": {$(for s in api ui; do printf '"%s": %s, ' $s "$($DOCKER image inspect -f '{{.Size}}' \
    slotcon-explorer/$s:latest | awk '{printf "%d", $1/1048576}')"; done | sed 's/, $//')},"
  echo "  \"browser\": $(tail -1 "$OUT/browser.log"),"
  echo "  \"seconds\": {$(for s in "${STEPS[@]}"; do printf '"%s": %.1f, ' "$s" "${SECONDS_OF[$s]}"; done | sed 's/, $//')}"
  echo "}"
} | tee "$OUT/result.json"
