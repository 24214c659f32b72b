#!/usr/bin/env bash
# Runs lix_jax on every worker of a Cloud TPU VM pod slice (same command on all hosts; JAX finds
# the pod's topology itself). Prerequisites: the repo at the same path on every worker (or
# installed from git), and the data under a path all workers can read (a GCS FUSE mount or a copy).
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --config=configs/synthetic.py --workdir=/mnt/runs/lix
# train.batch_size is global: use a multiple of the pod's device count (e.g. 8 images per chip).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR=${REPO_DIR:-~/lix_jax}
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --worker=all --command="
  cd ${REPO_DIR} && (test -d .venv || (python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]')) &&
  .venv/bin/python -m lix_jax.main ${args} --config.parallel.multihost=True"
