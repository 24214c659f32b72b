"""The lix_jax trainer, one run of one role: state, steps, sharding, checkpoints, metrics, the loop.

What is run on it (the pipeline, benchmark, sweeps, reports, prediction, export) is
`lix_jax.experiments`; nothing here imports it.

Modules (import them directly; nothing is imported here so that `import lix_jax.train` stays cheap):
  state       `TrainState` and optimizer chains.
  steps       per-shard pure step functions for teacher, student and distillation.
  sharding    device mesh, `jit(shard_map(...))` / `pmap` wrappers, multi-host start-up.
  checkpoint  orbax `Checkpointer`: state + data iterators + config + checksum, latest-N and best.
  ckpt_checks a checkpoint step's integrity: state checksum and structure check.
  metrics     on-device confusion matrices, mIoU / IoU / accuracy / F-score, JSONL + TensorBoard
              writer, progress bars.
  reliability workdir bookkeeping: stored configs, set-aside checkpoints, signals, non-finite guard.
  loop        training and evaluation loops.
"""
