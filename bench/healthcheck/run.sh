#!/usr/bin/env bash
# Health check benchmark (detection latency; cost of 10,000 endpoints at a
# 1 s interval) in a fresh network namespace. Root only.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bin
go build -o bin/bench-healthcheck ./bench/healthcheck
ns="portal-bench-hc-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
echo "machine: $(nproc) CPUs, $(uname -r), $(go version | cut -d' ' -f3)"
echo "command: bench/healthcheck/run.sh $*"
echo
ip netns exec "$ns" bin/bench-healthcheck "$@"
