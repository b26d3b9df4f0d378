#!/usr/bin/env bash
# `make compose-test`: `make run` on a fresh machine (docker/ci/fresh-run.sh), then build the images
# and run the compose stack for real, test it end to end through Traefik over HTTPS
# (tests/test_compose.py, marker `compose`), and tear everything down, whatever happened: the stack
# and its volumes removed, dockerd stopped by its pid, its iptables rules and bridges removed. Needs
# root on Debian (it installs the engine when it is missing).
#
#   docker/ci/compose-test.sh [pytest arguments]     # e.g. -k failover, or -x
#   COMPOSE_TEST_SOURCE=head ...                      # images from the last commit, not the tree
#   COMPOSE_TEST_KEEP=1 ...                           # leave the stack and dockerd running afterwards
#   COMPOSE_TEST_GPU_IMAGE=0 ...                      # skip building the GPU worker image (~2 min, 4 GB)
#   COMPOSE_TEST_FRESH_RUN=0 ...                      # skip `make run` on a fresh machine (~5 min)
#
# Figures (failover times, scaling) are printed and written to var/compose-test/figures.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
STATE=${COMPOSE_TEST_STATE:-$REPO/var/compose-test}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
PROJECT=${COMPOSE_TEST_PROJECT:-cvunet-ci}
started=$(date +%s)
mkdir -p "$STATE"
rm -f "$STATE/figures.json"
step() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - started)); }

bash docker/ci/engine-packages.sh

compose() { docker-compose -p "$PROJECT" -f docker/compose.yml -f docker/compose.ci.yml --env-file "$STATE/ci.env" "$@"; }

# Traefik is published on EDGE_NET.1, and the client-address test speaks from EDGE_NET.2 and .3: host
# addresses that are not loopback (on lo, /32 each), so connections reach Traefik through iptables' DNAT
# with their own source addresses, as a remote client's do. Only the addresses added here are removed.
EDGE_NET=${COMPOSE_TEST_EDGE_NET:-10.204.0}
edge_added=()
add_edge_addresses() {
  local address
  for address in "$EDGE_NET.1" "$EDGE_NET.2" "$EDGE_NET.3"; do
    ip -o addr show dev lo | grep -qF " $address/32 " && continue
    ip addr add "$address/32" dev lo
    edge_added+=("$address")
  done
}
remove_edge_addresses() {
  local address
  for address in ${edge_added[@]+"${edge_added[@]}"}; do ip addr del "$address/32" dev lo 2>/dev/null; done
}

cleanup() {
  local status=$?
  set +e
  [ ! -s "$STATE/figures.json" ] || { echo "figures ($STATE/figures.json):"; cat "$STATE/figures.json"; }
  if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ]; then
    echo "COMPOSE_TEST_KEEP=1: the stack and dockerd are left running; to stop them:"
    echo "  docker-compose -p $PROJECT -f docker/compose.yml -f docker/compose.ci.yml --env-file $STATE/ci.env down -v"
    echo "  bash docker/ci/dockerd.sh stop $STATE"
    for address in ${edge_added[@]+"${edge_added[@]}"}; do echo "  ip addr del $address/32 dev lo"; done
    exit "$status"
  fi
  if [ -f "$STATE/ci.env" ] && docker info >/dev/null 2>&1; then
    if [ "$status" -ne 0 ]; then
      compose ps >"$STATE/ps.txt" 2>&1
      compose logs --no-color --tail=200 >"$STATE/logs.txt" 2>&1
      echo "compose-test failed: container states in $STATE/ps.txt, logs in $STATE/logs.txt" >&2
    fi
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  remove_edge_addresses
  bash docker/ci/dockerd.sh stop "$STATE"
  step "done, exit status $status"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting dockerd"
bash docker/ci/dockerd.sh start "$STATE"

step "local base images (docker/local)"
PYTHON=$PYTHON bash docker/local/build-bases.sh

# `make run` on a fresh machine (the bare Python image), on this engine: docker/ci/fresh-run.sh.
if [ "${COMPOSE_TEST_FRESH_RUN:-1}" = 1 ]; then
  step "make run on a fresh machine (docker/ci/fresh-run.sh)"
  FRESH_RUN_SOURCE=${COMPOSE_TEST_SOURCE:-tree} FRESH_RUN_STATE=$STATE/fresh-run PYTHON=$PYTHON \
    bash docker/ci/fresh-run.sh
fi

# The images are built from the working tree, or with COMPOSE_TEST_SOURCE=head from the last commit
# (a working tree that others are editing at the same time).
context=.
if [ "${COMPOSE_TEST_SOURCE:-tree}" = head ]; then
  context=$STATE/src
  rm -rf "$context" && mkdir -p "$context"
  git archive HEAD | tar -x -C "$context"
fi
step "project images (from ${COMPOSE_TEST_SOURCE:-tree})"
# Side by side: each spends much of its time downloading wheels.
docker build -q -f "$context/docker/Dockerfile.web" --build-arg BASE=cvunet-local/python:bookworm \
  -t cvunet-matting-web:ci "$context" >/dev/null &
web_build=$!
# build_worker DEVICE TAG: the worker image for that device, without the build-time CUDA session.
build_worker() {
  docker build -q -f "$context/docker/Dockerfile.worker" --build-arg BASE=cvunet-local/python:bookworm \
    --build-arg DEVICE="$1" --build-arg CUDA_CHECK=0 \
    ${CVUNET_NPM_REGISTRY:+--build-arg "CVUNET_NPM_REGISTRY=$CVUNET_NPM_REGISTRY"} \
    -t "cvunet-matting-worker:$2" "$context"
}
# The GPU worker image too (no GPU here: its build-time session check is skipped and the libraries
# are checked instead, below); it is not run in the stack. COMPOSE_TEST_GPU_IMAGE=0 skips it.
gpu_build=
if [ "${COMPOSE_TEST_GPU_IMAGE:-1}" = 1 ]; then
  build_worker cuda ci-cuda >"$STATE/gpu-build.log" 2>&1 &
  gpu_build=$!
fi
build_worker cpu ci >/dev/null
wait "$web_build"
if [ -n "$gpu_build" ]; then
  wait "$gpu_build" || { cat "$STATE/gpu-build.log" >&2; echo "the GPU worker image did not build" >&2; exit 1; }
  step "GPU worker image: CUDA provider, CUDA and cuDNN libraries all found (a GPU host adds its driver)"
  docker run --rm cvunet-matting-worker:ci-cuda cuda-check --libraries
fi

step "secrets, ports and the tests' model"
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hex() { openssl rand -hex 16; }
mkdir -p "$STATE/models"
"$PYTHON" -c 'import sys; from pathlib import Path; from tests.support import build_tiny_model; build_tiny_model(Path(sys.argv[1]))' \
  "$STATE/models/tiny-cvunet.onnx"
chmod -R a+rX "$STATE/models"
flower_user=admin flower_password=$(hex)
printf '%s:%s\n' "$flower_user" "$(openssl passwd -apr1 "$flower_password")" >"$STATE/htpasswd"
chmod 644 "$STATE/htpasswd"
api_token=$(openssl rand -hex 24)
umask 077
cat >"$STATE/ci.env" <<ENV
COMPOSE_PROJECT_NAME=$PROJECT
CVUNET_TAG=ci
PYTHON_BASE_IMAGE=cvunet-local/python:bookworm
TRAEFIK_IMAGE=cvunet-local/traefik:bookworm
REDIS_IMAGE=cvunet-local/redis:bookworm
POSTGRES_IMAGE=cvunet-local/postgres:bookworm
PROMETHEUS_IMAGE=cvunet-local/prometheus:bookworm
NODE_EXPORTER_IMAGE=cvunet-local/prometheus:bookworm
WORKER_TARGETS=workers-cpu
REDIS_PASSWORD=$(hex)
POSTGRES_PASSWORD=$(hex)
CVUNET_SECRET_KEY=$(hex)
CVUNET_API_TOKENS=$api_token
FLOWER_USER=$flower_user
FLOWER_PASSWORD=$flower_password
TRAEFIK_HTPASSWD_FILE=$STATE/htpasswd
PROMETHEUS_TOKEN_FILE=$STATE/prometheus-token
HTTP_BIND=$EDGE_NET.1
CI_CLIENT_ADDRESSES=$EDGE_NET.2,$EDGE_NET.3
HTTP_PORT=$(free_port)
HTTPS_PORT=$(free_port)
REDIS_PORT=$(free_port)
POSTGRES_PORT=$(free_port)
CI_MODEL_DIR=$STATE/models
ENV
umask 022

# Prometheus's key comes once the schema is there (below); the file must exist before compose
# mounts it (a missing one becomes a directory). Prometheus reads it at each scrape.
: >"$STATE/prometheus-token"
chmod 644 "$STATE/prometheus-token"

step "stack up: traefik, web1, web2, flower, 3 CPU workers, redis, postgres, prometheus"
add_edge_addresses
compose up -d traefik web1 web2 flower worker-cpu0 worker-cpu1 worker-cpu2 prometheus node-exporter

step "Prometheus's metrics-only key (as docker/README.md's first install; up has run migrate)"
compose run --rm --no-deps migrate cvunet-matting user add prometheus --no-password >/dev/null
compose run --rm --no-deps -T migrate cvunet-matting user key add prometheus --metrics-only \
  | sed -n 's/.*(shown once): //p' | tr -d '\r\n' >"$STATE/prometheus-token"
test -s "$STATE/prometheus-token"

step "end-to-end tests (pytest -m compose)"
COMPOSE_TEST_ENV=$STATE/ci.env COMPOSE_TEST_STATE=$STATE \
  "$PYTHON" -m pytest -p no:cacheprovider -m compose --durations=0 tests/test_compose.py "$@"
