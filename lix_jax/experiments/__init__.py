"""What is run on the trainer (`lix_jax.train`, one run of one role): experiments made of runs.

Modules (import them directly; nothing is imported here, so that predicting from an exported
artifact imports neither flax nor the trainer):
  pipeline    the one-command job: teacher, students of `pipeline.methods`, results files; `train_run`
              (a run that exports its network when it finishes), finished-run re-use (DESIGN §6).
  benchmark   rows x seeds of `configs/benchmark.py` -> benchmark.csv / .md / .png, README tables.
  sweep       one config run per sweep entry -> sweep.csv / sweep.md.
  report      pictures of finished runs: prediction grid, per-tap CKA, DWC weights, curves.
  confusion   which classes runs confuse, pair by pair, from their evaluations' confusion matrices.
  results_csv results files: DESIGN §6 columns, atomic writes, merging runs into committed files.
  predict     colourised predictions of a folder of images (a checkpoint or an exported artifact).
  export      jax.export artifacts of a finished network, and how a car-side process calls one.
  onnx_export the same network as ONNX (jax2onnx); `export.load` runs it with onnxruntime.
"""
