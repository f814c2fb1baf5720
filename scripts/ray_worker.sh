#!/usr/bin/env bash
# Multi-node, step 2 of 3, on every node but the head: join the Ray cluster started by
# scripts/ray_head.sh. Every node needs the same code, the same Python environment and the model
# weights at the same path (run `hermes-server download` on each, or share the models folder).
#
#   NODE_IP=10.0.0.2 scripts/ray_worker.sh 10.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
  echo "usage: NODE_IP=<this node's address> $0 <head-address>:<port>" >&2
  exit 2
fi
VENV=${VENV:-.venv}
NODE_IP=${NODE_IP:-$(hostname -I | awk '{print $1}')}
"$VENV/bin/python" -m pip install -q -e ".[gpu,multinode]"
export VLLM_HOST_IP=$NODE_IP
exec "$VENV/bin/ray" start --address="$1" --node-ip-address="$NODE_IP" --block
