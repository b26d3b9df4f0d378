#!/usr/bin/env bash
# Local base images, for a machine that reaches Debian's and PyPI's mirrors but no container
# registry (CI here). Makes a Debian bookworm root file system with mmdebstrap from this host's
# own apt sources and CA certificates, imports it, and builds on it the stand-ins for the images
# the compose files name upstream: Python 3.11, Redis, PostgreSQL, Traefik and Prometheus.
#
#   docker/local/build-bases.sh          # tags cvunet-local/{debian,python,redis,postgres,traefik,prometheus}:bookworm
#   docker/local/build-bases.sh python   # Debian and Python only (docker/ci/fresh-run.sh needs no more)
#
# pip inside the builds uses this host's index (PIP_INDEX_URL, or pip's own configuration), read
# now and passed as build arguments: no host name is written in any committed file.
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${LOCAL_BASE_PREFIX:-cvunet-local}
TAG=bookworm
PYTHON=${PYTHON:-python3}

# One pip setting, from the environment first, then pip's configuration files; file:// indexes
# are left out (a path on this host means nothing inside a build).
pip_setting() {
  local env_name=$1 key=$2 value=${!1:-}
  [ -n "$value" ] || value=$("$PYTHON" -m pip config get "global.$key" 2>/dev/null || true)
  printf '%s' "$value" | tr -s ' \n' '\n\n' | grep -v '^file:' | paste -sd ' ' || true
}
PIP_ARGS=(
  --build-arg "PIP_INDEX_URL=$(pip_setting PIP_INDEX_URL index-url)"
  --build-arg "PIP_EXTRA_INDEX_URL=$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url)"
  --build-arg "PIP_TRUSTED_HOST=$(pip_setting PIP_TRUSTED_HOST trusted-host)"
)

if ! docker image inspect "$PREFIX/debian:$TAG" >/dev/null 2>&1; then
  sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # The host's extra CA certificates (a TLS-inspecting proxy's, say) go in too, or pip and the
  # model download inside a build fail certificate verification.
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"; fi' \
    --customize-hook='chroot "$1" update-ca-certificates' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    bookworm "$work/rootfs.tar" "$sources"
  docker import --change 'CMD ["bash"]' "$work/rootfs.tar" "$PREFIX/debian:$TAG"
fi

build() {
  local name=$1 base=$PREFIX/debian:$TAG
  [ "$name" != traefik ] || base=$PREFIX/python:$TAG
  docker build -q --build-arg "BASE=$base" "${PIP_ARGS[@]}" \
    -f "Dockerfile.$name" -t "$PREFIX/$name:$TAG" . >/dev/null
  echo "built $PREFIX/$name:$TAG"
}
if [ "${1:-}" = python ]; then
  build python
  exit 0
fi
# Python first (Traefik's stand-in builds on it), the others alongside it: mostly package downloads.
pids=()
for name in redis postgres prometheus; do
  build "$name" & pids+=($!)
done
build python
build traefik
for pid in "${pids[@]}"; do wait "$pid"; done
