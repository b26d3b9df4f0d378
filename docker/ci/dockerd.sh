#!/usr/bin/env bash
# A private Docker engine for `make compose-test`: started in the background, stopped by its pid,
# and the iptables rules and bridge it added removed afterwards, so the machine is left as found.
#
#   docker/ci/dockerd.sh start STATE_DIR   # starts dockerd unless one already answers; waits for it
#   docker/ci/dockerd.sh stop STATE_DIR    # stops only the dockerd this script started
#
# STATE_DIR keeps the pid, the log and the iptables rules from before the start.
set -euo pipefail

action=${1:?start or stop}
state=${2:?state directory}
mkdir -p "$state"

# The rules as iptables-save prints them, packet counters dropped (they change on their own).
rules() { iptables-save 2>/dev/null | sed -E 's/ \[[0-9]+:[0-9]+\]$//' | grep -E '^(\*|-A|:)' || true; }

start() {
  if docker info >/dev/null 2>&1; then
    echo "dockerd: an engine already answers; using it (it will not be stopped)"
    return 0
  fi
  rules >"$state/iptables.before"
  sysctl -n net.ipv4.ip_forward >"$state/ip_forward.before"
  ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 >"$state/links.before"
  dockerd --host unix:///var/run/docker.sock --storage-driver overlay2 >"$state/dockerd.log" 2>&1 &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $(cat "$state/dockerd.pid"))"; return 0; }
    kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || break
    sleep 1
  done
  echo "dockerd did not start; its log:" >&2
  tail -n 30 "$state/dockerd.log" >&2
  return 1
}

# Deletes, table by table, every rule present now and absent before the start, then the chains
# dockerd created (user chains only: built-in chains and their policies are never touched).
remove_added_rules() {
  rules >"$state/iptables.after"
  python3 - "$state/iptables.before" "$state/iptables.after" <<'PY' | while IFS=$'\t' read -r table op rest; do
import sys

def parse(path):
    table, rules, chains, policies = "", [], [], []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            rules.append((table, line[3:]))
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            if policy == "-":
                chains.append((table, chain))
            else:
                policies.append((table, chain, policy))
    return rules, chains, policies

before_rules, before_chains, before_policies = parse(sys.argv[1])
after_rules, after_chains, after_policies = parse(sys.argv[2])
before_policies = {(table, chain): policy for table, chain, policy in before_policies}
old = set(before_rules)
for table, rule in after_rules:
    if (table, rule) not in old:
        print(f"{table}\t-D\t{rule}")
added = [(table, chain) for table, chain in after_chains if (table, chain) not in set(before_chains)]
for op in ("-F", "-X"):  # every new chain emptied before any is deleted (they jump to each other)
    for table, chain in added:
        print(f"{table}\t{op}\t{chain}")
# Built-in chains' policies (dockerd sets FORWARD to DROP) as they were; ACCEPT where the table
# was not loaded before.
for table, chain, policy in after_policies:
    old_policy = before_policies.get((table, chain), "ACCEPT")
    if policy != old_policy:
        print(f"{table}\t-P\t{chain} {old_policy}")
PY
    # shellcheck disable=SC2086  # a rule's own words, as iptables-save printed them (no quoting there)
    eval "iptables -t $table $op $rest" 2>/dev/null || true
  done
}

stop() {
  [ -f "$state/dockerd.pid" ] || { echo "dockerd: not started by this script; left alone"; return 0; }
  local pid
  pid=$(cat "$state/dockerd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$state/dockerd.pid"
  remove_added_rules
  # dockerd turns on forwarding; put back what it was.
  [ ! -f "$state/ip_forward.before" ] || sysctl -q -w "net.ipv4.ip_forward=$(cat "$state/ip_forward.before")"
  # Bridges dockerd made (docker0, br-*) outlive it.
  ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vxF -f "$state/links.before" |
    grep -E '^(docker0|br-|veth)' | while read -r link; do ip link delete "$link" 2>/dev/null || true; done
  echo "dockerd: stopped (pid $pid), its iptables rules and bridges removed"
}

"$action"
