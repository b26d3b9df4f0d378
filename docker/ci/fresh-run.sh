#!/usr/bin/env bash
# The README's first command on a fresh machine, for real: a container from the bare local Python
# image (Debian's python3 and venv; no Redis, no PostgreSQL, no make) gets the working tree (never
# the host's .venv) and the model read-only, and runs `make run`: it must install what it drives, be
# up and answering /readyz through Traefik, matte one image through the API, and stop cleanly with
# `make stop` (docker/ci/fresh-run-inside.sh). The container and the dockerd started here are
# removed whatever happened. Needs root on Debian (it installs the engine when it is missing).
#
#   docker/ci/fresh-run.sh                # `make compose-test` runs it, on its engine
#   FRESH_RUN_SOURCE=head ...             # the last commit instead of the working tree
#   FRESH_RUN_KEEP=1 ...                  # leave the container (and a dockerd started here) running
#
# The model comes from CVUNET_MODEL_DIR (default ~/.cache/cvunet-matting/models; fetched there first
# when missing), mounted read-only: `make run`'s `make model` must find it and download nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
STATE=${FRESH_RUN_STATE:-$REPO/var/fresh-run}
MODELS=${CVUNET_MODEL_DIR:-$HOME/.cache/cvunet-matting/models}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
NAME=cvunet-fresh-run
IMAGE=cvunet-local/python:bookworm
started=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - started)); }

if [ ! -f "$MODELS/isnet-fp16.onnx" ]; then # what `make model` does, on this host (an install-time download)
  [ -x "$PYTHON" ] || { echo "error: no model in $MODELS and no $PYTHON to fetch it: run \`make model\` first" >&2; exit 1; }
  CVUNET_MODEL_DIR=$MODELS "$PYTHON" -m cvunet_matting.commands.cli model fetch
fi
mkdir -p "$STATE"
rm -rf "$STATE/logs"
bash docker/ci/engine-packages.sh

# An engine that already answers (make compose-test's) is used and left running; one started here is stopped.
own_engine=0
cleanup() {
  local status=$?
  set +e
  if [ "${FRESH_RUN_KEEP:-0}" = 1 ]; then
    echo "FRESH_RUN_KEEP=1: left running; to stop: docker rm -f $NAME"
    [ "$own_engine" = 0 ] || echo "  bash docker/ci/dockerd.sh stop $STATE"
    exit "$status"
  fi
  if [ "$status" -ne 0 ] && docker cp "$NAME:/tmp/fresh-run" "$STATE/logs" 2>/dev/null; then
    docker cp "$NAME:/root/.local/share/cvunet-matting/stack/logs" "$STATE/logs/stack" 2>/dev/null
    echo "fresh-run failed: make run's output and the stack's logs in $STATE/logs" >&2
  fi
  docker rm -f "$NAME" >/dev/null 2>&1
  [ "$own_engine" = 0 ] || bash docker/ci/dockerd.sh stop "$STATE"
  step "fresh-run done, exit status $status"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! docker info >/dev/null 2>&1; then
  step "dockerd"
  bash docker/ci/dockerd.sh start "$STATE"
  own_engine=1
fi
step "the bare local Python image ($IMAGE)"
PYTHON=$PYTHON bash docker/local/build-bases.sh python

# The files a clean clone has (tracked and new ones git does not ignore; nothing built), as a tar.
step "the source (${FRESH_RUN_SOURCE:-tree})"
if [ "${FRESH_RUN_SOURCE:-tree}" = head ]; then
  git archive -o "$STATE/src.tar" HEAD
else
  git ls-files -z -co --exclude-standard | while IFS= read -r -d '' file; do
    [ ! -e "$file" ] || printf '%s\0' "$file" # a deleted file is still listed until committed
  done | tar --null -cf "$STATE/src.tar" -T -
fi

docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" -e CVUNET_MODEL_DIR=/models -v "$MODELS:/models:ro" \
  -v "$STATE/src.tar:/src.tar:ro" -w /src "$IMAGE" sleep infinity >/dev/null
docker exec "$NAME" tar -xf /src.tar -C /src
docker exec "$NAME" bash docker/ci/fresh-run-inside.sh
