#!/usr/bin/env bash
# Multi-node, step 1 of 3, on the head node (the one that will run `hermes-server serve`):
# start the Ray head. vLLM's documented multi-node path; Ray is not a vLLM dependency, so this
# installs the `multinode` extra first.
#
#   NODE_IP=10.0.0.1 scripts/ray_head.sh
#   # then on every other node:  NODE_IP=10.0.0.2 scripts/ray_worker.sh 10.0.0.1:6379
#   # then here:                  hermes-server serve --config configs/multinode-2x8-bf16.yaml
#
# NODE_IP must be the address the nodes reach each other on (the NCCL / InfiniBand network).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${RAY_PORT:-6379}
NODE_IP=${NODE_IP:-$(hostname -I | awk '{print $1}')}
"$VENV/bin/python" -m pip install -q -e ".[gpu,multinode]"
# vLLM's workers use this address for torch.distributed; it must match Ray's node address.
export VLLM_HOST_IP=$NODE_IP
"$VENV/bin/ray" start --head --port="$PORT" --node-ip-address="$NODE_IP" --disable-usage-stats
echo
echo "Ray head on $NODE_IP:$PORT. On each worker node run:"
echo "  NODE_IP=<that node's address> scripts/ray_worker.sh $NODE_IP:$PORT"
echo "then check that every GPU joined:  $VENV/bin/ray status"
echo "and serve from this node:          $VENV/bin/hermes-server serve --config configs/multinode-2x8-bf16.yaml"
