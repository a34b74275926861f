#!/usr/bin/env bash
# Runs the userspace-proxy benchmark (portal vs HAProxy vs direct nginx, wrk)
# in a fresh network namespace: its own loopback, conntrack table and
# TIME_WAIT space, so runs do not disturb each other or the host. Root only.
# Usage: bench/userspace/run.sh [flags of bench/userspace, e.g. -rounds 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in nginx haproxy wrk ip; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install nginx haproxy wrk iproute2)"; exit 1; }
done
mkdir -p bin
go build -o bin/ ./cmd/portald
go build -o bin/bench-userspace ./bench/userspace
ns="portal-bench-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
# Connection-per-request phases create many short connections: let the
# namespace reuse TIME_WAIT ports (affects this namespace only).
ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
echo "machine: $(nproc) CPUs, $(uname -r), $(go version | cut -d' ' -f3); $(nginx -v 2>&1); $(haproxy -v | head -1); $(wrk -v 2>&1 | head -1)"
echo "command: bench/userspace/run.sh $*"
ip netns exec "$ns" bin/bench-userspace -portald bin/portald "$@"
