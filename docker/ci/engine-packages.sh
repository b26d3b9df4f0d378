#!/usr/bin/env bash
# What the CI scripts that drive Docker need on this machine (docker/ci/compose-test.sh and
# fresh-run.sh): the engine, iptables (dockerd.sh puts its rules back), docker-compose and
# mmdebstrap (docker/local/build-bases.sh). apt-get installs only what is missing: root on Debian.
set -euo pipefail
need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
[ ${#need_apt[@]} -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "error: ${need_apt[*]} not found: install them (Debian: apt-get install ${need_apt[*]})" >&2
  exit 1
fi
echo "installing ${need_apt[*]} (apt-get)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
