#!/usr/bin/env bash
# N JAX processes on this machine (CPU, loopback), each with D simulated devices: the multi-host
# code path without a cluster. Used by tests/test_multiprocess.py.
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS -- python -m lix_jax.main --config=... --workdir=...
# Each process gets --config.parallel.{multihost,coordinator_address,num_processes,process_id};
# process i logs to ${LOG_DIR:-/tmp}/lix_process_<i>.log. Exits non-zero if any process fails.
# XLA_FLAGS from the environment are kept (the device count is appended to them).
set -euo pipefail
num_processes=${1:?number of processes}
devices=${2:?devices per process}
shift 2
[[ "${1:-}" == "--" ]] && shift
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-/tmp}
pids=()
for ((i = 0; i < num_processes; i++)); do
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${devices}" JAX_PLATFORMS=cpu \
    "$@" --config.parallel.multihost=True --config.parallel.coordinator_address="127.0.0.1:${port}" \
    --config.parallel.num_processes="${num_processes}" --config.parallel.process_id="${i}" \
    >"${log_dir}/lix_process_${i}.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
