#!/usr/bin/env bash
# iptables dataplane benchmark: sync times vs the iptables-restore floor at
# 1k/5k/10k services (10 endpoints each), and API-write-to-rule latency at
# 1k services. Each phase runs in a fresh network namespace. Root only.
# Usage: bench/iptables/run.sh [sizes...]   (default: 1000 5000 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in iptables iptables-restore iptables-save ip; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install iptables iproute2)"; exit 1; }
done
mkdir -p bin
go build -o bin/ ./cmd/portald
go build -o bin/bench-iptables ./bench/iptables
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 10000)
inns() {
  local ns="portal-bench-ipt-$$-$RANDOM"
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  local rc=0
  ip netns exec "$ns" "$@" || rc=$?
  ip netns del "$ns"
  return $rc
}
echo "machine: $(nproc) CPUs, $(uname -r), $(iptables-legacy --version), $(iptables-nft --version)"
echo "command: bench/iptables/run.sh ${sizes[*]}"
echo
echo "| variant | services | rules | full sync ms | iptables-restore alone ms (floor) | full / floor | full resync over existing rules ms | one-endpoint change ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
ROUNDS_SMALL=${ROUNDS_SMALL:-3}   # rounds up to 1000 services
ROUNDS_LARGE=${ROUNDS_LARGE:-1}   # rounds above (each one takes minutes on 2 cores)
# iptables-nft's restore grows much faster than linearly with the table;
# MAX_NFT caps the sizes it is run at (10k services take tens of minutes).
MAX_NFT=${MAX_NFT:-5000}
for variant in ${VARIANTS:-iptables-legacy iptables-nft}; do
  for n in "${sizes[@]}"; do
    [ "$variant" != iptables-nft ] || [ "$n" -le "$MAX_NFT" ] || continue
    rounds=$ROUNDS_SMALL; [ "$n" -le 1000 ] || rounds=$ROUNDS_LARGE
    inns bin/bench-iptables -phase sync -services "$n" -rounds "$rounds" -iptables "$variant"
  done
done
echo
echo "| services | writes | write-to-rule p50 ms | p99 ms |"
echo "|---:|---:|---:|---:|"
inns bin/bench-iptables -phase latency -services 1000 -writes 50 -portald bin/portald
