"""Pictures of a finished pipeline: predictions, DWC weight maps, per-tap CKA, training curves.

Everything here runs on the host after training, on a few test images, from the runs' newest good
checkpoints; nothing is on the training hot path.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lix_jax import kernels, losses, plots, viz
from lix_jax.data import pipeline as input_pipeline
from lix_jax.train import inputs, steps, task as task_lib

TAPS = ("stage1", "stage2", "stage3", "stage4", "decoder")


def _forward(model, variables, role: str, batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  inputs = steps.model_inputs(batch, uses_x=role == "teacher")
  logits, taps = jax.jit(lambda v, *a: model.apply(v, *a, train=False))(variables, *inputs)
  return np.asarray(logits), {k: np.asarray(v) for k, v in taps.items()}


def tap_cka(student_taps: Mapping[str, np.ndarray], teacher_taps: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Linear CKA between student and teacher features at each tap, averaged over images."""
  out = {}
  for tap in TAPS:
    s, t = student_taps[tap], teacher_taps[tap]
    s = jnp.reshape(s, (s.shape[0], -1, s.shape[-1]))
    t = jnp.reshape(t, (t.shape[0], -1, t.shape[-1]))
    out[tap] = float(jnp.mean(jax.vmap(kernels.linear_cka)(s, t)))
  return out


def write_report(config, workdir: str, runs: Mapping[str, tuple[str, str]], num: int) -> dict[str, Any]:
  """Writes predictions/grid.png, cka.png, training_curves.png and (with a LIX run) dwc_weights.png.

  Args:
    runs: column name -> (run workdir, role) with the teacher first, e.g. {"teacher": (...,
      "teacher"), "student": (..., "student"), "LIX student": (..., "distill")}.
    num: number of test images (at most the test split's).

  Returns:
    {"cka": {tap: {run: value}}}.
  """
  raw = inputs.source(config, config.data.test_split)
  num = min(num, len(raw))  # A small split (a rehearsal, a few frames) has fewer than asked.
  batch = next(iter(input_pipeline.eval_dataset(raw, batch_size=num, x_modality=config.data.x_modality)))
  outputs = {}
  for name, (run_dir, role) in runs.items():
    model, variables = task_lib.load_variables(config, run_dir, role)
    outputs[name] = _forward(model, variables, role, batch)

  rows = []
  for i in range(num):
    row = {"RGB": raw[i]["image"], "X": viz.x_to_rgb(batch["x"][i], config.data.x_modality),
           "ground truth": viz.colorize(np.asarray(batch["label"][i]))}
    row.update({name: viz.colorize(np.argmax(logits[i], -1)) for name, (logits, _) in outputs.items()})
    rows.append(row)
  viz.save_png(os.path.join(workdir, "predictions", "grid.png"), viz.prediction_grid(
      rows, list(rows[0]), legend=viz.class_legend(inputs.class_names(config))))

  teacher_logits, teacher_taps = outputs["teacher"]
  cka = {tap: {} for tap in TAPS}
  for name, (_, taps) in outputs.items():
    if name != "teacher":
      for tap, value in tap_cka(taps, teacher_taps).items():
        cka[tap][name] = value
  if any(cka[tap] for tap in TAPS):
    plots.cka_bars(cka, path=os.path.join(workdir, "cka.png"))

  lix = [name for name, (_, role) in runs.items() if role == "distill"]
  if lix:
    d = config.distill
    dwld = losses.make_distill_loss("dwld", d).logit  # The run's DWLD, as its steps computed it.
    _, aux = dwld(jnp.asarray(outputs[lix[0]][0][:1]), jnp.asarray(teacher_logits[:1]),
                  jnp.asarray(batch["label"][:1]))
    plots.weight_map_figure(np.asarray(aux["w_t"][0]), np.asarray(aux["w_n"][0]), raw[0]["image"],
                          title=f"DWC weights ({d.controller}, κ = {d.kappa:g}) of {lix[0]}",
                          path=os.path.join(workdir, "dwc_weights.png"))

  curves = {name: os.path.join(run_dir, "metrics.jsonl") for name, (run_dir, _) in runs.items()}
  plots.training_curves(curves, keys=["ce", "eval/miou"], title="training",
                      path=os.path.join(workdir, "training_curves.png"))
  return {"cka": cka}
