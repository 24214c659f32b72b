"""The lix_jax trainer: train state, step functions, sharding, checkpoints, metrics and the loop.

Modules (import them directly; nothing is imported here so that `import lix_jax.train` stays cheap):
  state       `TrainState` and optimizer chains.
  steps       per-shard pure step functions for teacher, student and distillation.
  sharding    device mesh, `jit(shard_map(...))` / `pmap` wrappers, multi-host start-up.
  checkpoint  orbax `Checkpointer`: state + data iterators + config + checksum, latest-N and best.
  metrics     on-device confusion matrices, mIoU / IoU / accuracy / F-score, JSONL + TensorBoard
              writer, progress bars.
  loop        training and evaluation loops.
  experiment  the pipeline (teacher, students, evaluation, results files and pictures).
  predict     colourised predictions as PNGs.
"""
