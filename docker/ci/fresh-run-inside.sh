#!/usr/bin/env bash
# Inside docker/ci/fresh-run.sh's container (the bare local Python image, the tree in the current
# folder): the README's first command on a fresh machine, then one image, then `make stop`.
set -euo pipefail
started=$(date +%s)
step() { printf '\n== fresh-run: %s (%ds)\n' "$*" $(($(date +%s) - started)); }
logs=/tmp/fresh-run
mkdir -p "$logs"

# The one tool a newcomer brings that the bare image lacks.
step "installing make (apt-get)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make >/dev/null

# What `make run` finds missing it must install itself: Redis and PostgreSQL are not here yet.
for tool in redis-server pg_ctlcluster; do
  ! command -v "$tool" >/dev/null || { echo "fresh-run: $tool is installed already: not a fresh machine" >&2; exit 1; }
done

step "make run (in the background; its output in $logs/make-run.log)"
(
  set +e
  make run >"$logs/make-run.log" 2>&1
  echo $? >"$logs/make-run.rc"
) &
if ! python3 docker/ci/fresh_run_check.py ready "$logs/make-run.rc"; then
  tail -n 60 "$logs/make-run.log" >&2
  exit 1
fi
grep -E '^installing |^PostgreSQL: ' "$logs/make-run.log" || true

step "one image through the API"
key=$(.venv/bin/cvunet-matting user key add admin --label fresh-run | sed -n 's/.*(shown once): //p')
.venv/bin/python docker/ci/fresh_run_check.py matte "$key"

step "make stop"
make stop
for _ in $(seq 60); do [ -f "$logs/make-run.rc" ] && break; sleep 1; done
[ -f "$logs/make-run.rc" ] || { echo "fresh-run: make run still running after make stop" >&2; exit 1; }
[ "$(cat "$logs/make-run.rc")" = 0 ] || {
  tail -n 40 "$logs/make-run.log" >&2
  echo "fresh-run: make run exited $(cat "$logs/make-run.rc") after make stop" >&2
  exit 1
}
# The stack's processes are gone (Redis and PostgreSQL, the machine's services, stay). Each name
# with one letter in brackets: the pattern does not match grep's own command line.
left=$(grep -alE 'gunicor[n]|celer[y]|traefi[k]|flowe[r]|prometheu[s]|cvunet[_-]matting' /proc/[0-9]*/cmdline 2>/dev/null || true)
if [ -n "$left" ]; then
  echo "fresh-run: still running after make stop:" >&2
  for file in $left; do tr '\0' ' ' <"$file" >&2 2>/dev/null; echo >&2; done
  exit 1
fi
step "done: make run up from nothing, one image matted, make stop clean"
