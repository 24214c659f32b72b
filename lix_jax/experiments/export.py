"""Ship a trained network: `jax.export` artifacts (StableHLO) and `meta.json` (DESIGN §6 "Export").

A finished run writes, into `<workdir>/export/`:

  student.jaxexport        (teacher.jaxexport for a teacher run) float32 network
  student.bf16.jaxexport   the same network in bfloat16 (params, batch statistics and the
                           normalised image cast to bfloat16; logits are returned in float32)
  student.onnx             the float32 network as ONNX (`onnx_export`; where jax2onnx is
                           installed: the `onnx` extra), for ONNX Runtime and TensorRT
  meta.json                what a caller needs besides the artifact (see `export_run`)

The exported function is the deployable network only (a distilled student is exactly `Student`:
the distillation adapters are dropped) plus the dataset normalisation, so that a car-side caller
needs nothing else:

  student: f(image uint8 [b, H, W, 3] RGB)                       -> (labels, logits)
  teacher: f(image uint8 [b, H, W, 3], x float32 [b, H, W, Cx])  -> (labels, logits)

  labels int32 [b, H, W] (argmax of the logits), logits float32 [b, H, W, K].
  x is the raw modality (depth in metres, disparity in pixels or unit normals; 0 = missing), the
  per-modality scaling (`lix_jax.data.geometry.normalize_x`) is done inside.

`b` is a symbolic batch and H = 32·h, W = 32·w symbolic multiples of the network stride: one
artifact serves every batch and every image size that is a multiple of 32. Other sizes are padded
by the caller (`segment` pads bottom/right with the mean colour, so the padding is ~0 after
normalisation as the network's own padding is exactly 0, and crops the outputs back: KITTI's
375×1242 runs as 384×1248). Any H, W would also trace (`models.networks` pads internally with
integer shape arithmetic), but its lowering costs about twice as much CPU time, which every
finished run pays. The artifact is lowered for the platforms in `meta.json["platforms"]` (cpu,
cuda and tpu where this jax can lower for them).

Reading an artifact (`load`, `Artifact`) needs jax and numpy only — neither flax nor
`lix_jax.models` is imported by this module; the writer imports them inside its functions. jax
too is imported where it is used, so that `load` of a `.onnx` file, `segment` and `read_meta`
need NumPy (and onnxruntime) only.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Sequence

import numpy as np

EXPORT_DIR = "export"
META_FILE = "meta.json"
META_VERSION = 1
STRIDE = 32  # models.networks.PAD_MULTIPLE: inputs are padded to a multiple of this inside.
PLATFORMS = ("cpu", "cuda", "tpu")
VARIANTS = {"float32": "", "bfloat16": ".bf16"}  # dtype -> file-name infix
SYMBOLIC_DIMS = "b, 32*h, 32*w"  # image [b, 32h, 32w, 3]


def artifact_name(kind: str, dtype: str = "float32") -> str:
  """`student.jaxexport`, `teacher.bf16.jaxexport`, ..."""
  return f"{kind}{VARIANTS[dtype]}.jaxexport"


def kind_of(role: str) -> str:
  """The network a trainer role ships: "teacher" for the teacher, "student" otherwise."""
  return "teacher" if role == "teacher" else "student"


# -------------------------------------------------------------------------------------------------
# Writing (imports flax / lix_jax.models lazily).
# -------------------------------------------------------------------------------------------------
def deployable_fn(model, variables, *, mean: Sequence[float], std: Sequence[float],
                  x_modality: str | None = None, dtype: str = "float32"):
  """The function that is exported: uint8 image (and raw X) -> (int32 labels, float32 logits).

  Args:
    model: a `Student` or `Teacher` (built with the compute `dtype`).
    variables: its `{"params", "batch_stats"}` (host arrays); cast to `dtype` and closed over, so
      they become constants of the artifact.
    mean, std: the image normalisation in 0..255 units, as the training pipeline applies it.
    x_modality: the teacher's X modality (None for a student).
    dtype: "float32" or "bfloat16".
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from lix_jax.data import geometry  # noqa: PLC0415  (writer only)
  cast = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  variables = jax.tree.map(
      lambda v: jnp.asarray(v, cast) if jnp.issubdtype(np.asarray(v).dtype, jnp.floating)
      else jnp.asarray(v), variables)
  mean = np.asarray(mean, np.float32)
  inv_std = 1 / np.asarray(std, np.float32)  # Exactly as `pipeline.process_example`.

  def fn(image, *x):
    img = ((image.astype(jnp.float32) - mean) * inv_std).astype(cast)
    inputs = (img,)
    if x_modality is not None:
      raw = x[0].astype(jnp.float32)
      valid = jnp.any(raw != 0, axis=-1, keepdims=True)
      inputs += ((geometry.normalize_x(raw, x_modality) * valid).astype(cast),)
    logits, _ = model.apply(variables, *inputs, train=False)
    logits = logits.astype(jnp.float32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits

  return fn


def input_specs(x_channels: int | None = None) -> tuple[Any, ...]:
  """The symbolic input specs (`jax.ShapeDtypeStruct`): image uint8 [b, 32h, 32w, 3] (and x
  float32 [b, 32h, 32w, Cx])."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  b, h, w = jax.export.symbolic_shape(SYMBOLIC_DIMS)
  specs = (jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),)
  if x_channels is not None:
    specs += (jax.ShapeDtypeStruct((b, h, w, x_channels), jnp.float32),)
  return specs


def export_fn(fn, specs, platforms: Sequence[str] = PLATFORMS) -> tuple[bytes, tuple[str, ...]]:
  """Serialised `jax.export` of `fn` for `platforms`; falls back to CPU only (logged) when this
  jax cannot lower for all of them. Returns (bytes, the platforms lowered for)."""
  import jax  # noqa: PLC0415
  try:
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(*specs)
  except Exception as e:  # noqa: BLE001  (any lowering failure: keep a CPU artifact)
    if tuple(platforms) == ("cpu",):
      raise
    logging.warning("jax.export for %s failed (%s: %s); exporting for cpu only",
                    platforms, type(e).__name__, str(e)[:200])
    return export_fn(fn, specs, ("cpu",))
  return exported.serialize(), tuple(exported.platforms)


def _model(config, kind: str, num_classes: int, x_channels: int, dtype: str):
  from lix_jax import models  # noqa: PLC0415
  section = dict((config.teacher if kind == "teacher" else config.student).to_dict())
  section["dtype"] = dtype
  return models.build(section, num_classes=num_classes, x_channels=x_channels, kind=kind)


def export_run(config, workdir: str, role: str, variables: dict[str, Any], *,
               platforms: Sequence[str] = PLATFORMS,
               dtypes: Sequence[str] = tuple(VARIANTS)) -> dict[str, Any]:
  """Writes `<workdir>/export/{kind}.jaxexport`, its bfloat16 variant, `{kind}.onnx` (where
  jax2onnx is installed and the network converts; a warning otherwise) and `meta.json`.

  Args:
    config: the run's config.
    workdir: the run's workdir.
    role: "teacher" | "student" | "distill" (a distilled student ships as `student`).
    variables: the network's `{"params", "batch_stats"}` on the host (for "distill" the student's
      own variables, `Task.variables`, so the adapters are not part of it).
    platforms: lowering platforms (CPU only where this jax cannot lower for the others).
    dtypes: the variants to write.

  Returns:
    The meta.json contents.
  """
  from lix_jax import viz  # noqa: PLC0415
  from lix_jax.data import BUILDERS, geometry, pipeline  # noqa: PLC0415
  start = time.perf_counter()
  kind = kind_of(role)
  names = list(BUILDERS[config.data.name].CLASS_NAMES)
  x_channels = geometry.MODALITIES[config.data.x_modality]
  x_modality = config.data.x_modality if kind == "teacher" else None
  out_dir = os.path.join(workdir, EXPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  files, lowered, onnx_meta = {}, (), None
  specs = input_specs(x_channels if x_modality else None)
  for dtype in dtypes:
    model = _model(config, kind, len(names), x_channels, dtype)
    fn = deployable_fn(model, variables, mean=pipeline.IMAGENET_MEAN, std=pipeline.IMAGENET_STD,
                       x_modality=x_modality, dtype=dtype)
    blob, lowered = export_fn(fn, specs, platforms)
    files[dtype] = artifact_name(kind, dtype)
    _write_bytes(os.path.join(out_dir, files[dtype]), blob)
    if dtype == "float32":
      onnx_meta = _write_onnx(fn, specs, out_dir, kind)
  if onnx_meta:
    files["onnx"] = onnx_meta.pop("file")
  section = (config.teacher if kind == "teacher" else config.student).to_dict()
  meta = {
      "format_version": META_VERSION,
      "lix_jax_version": _version(),
      "kind": kind,
      "trained_as": role,
      "artifacts": files,
      "platforms": list(lowered),
      "onnx": onnx_meta,
      "inputs": _inputs_doc(x_modality, x_channels),
      "outputs": [
          {"name": "labels", "dtype": "int32", "shape": ["b", "H", "W"],
           "doc": "argmax of the logits: class ids 0..num_classes-1"},
          {"name": "logits", "dtype": "float32", "shape": ["b", "H", "W", len(names)],
           "doc": "float32 in every variant (the bfloat16 variant computes in bfloat16)"}],
      "symbolic_dims": {"b": "batch, any >= 1", "H": f"{STRIDE}*h, h >= 1",
                        "W": f"{STRIDE}*w, w >= 1"},
      "stride": STRIDE,
      "accepted_sizes": f"H and W multiples of {STRIDE}, any batch",
      "padding": f"other sizes: pad the image bottom/right to multiples of {STRIDE} with the mean "
                 "colour (round(normalization.mean)) and crop labels/logits back "
                 "(lix_jax.experiments.export.segment does this)",
      "normalization": {"mean": list(pipeline.IMAGENET_MEAN), "std": list(pipeline.IMAGENET_STD),
                        "units": "0..255", "formula": "(image - mean) / std",
                        "applied": "inside the artifact"},
      "variants": {"float32": "params, activations and logits float32",
                   "bfloat16": "params, batch statistics and the normalised image cast to "
                               "bfloat16, compute in bfloat16; logits returned float32",
                   "onnx": "the float32 network as ONNX (inputs and outputs as above, by name)"},
      "num_classes": len(names),
      "class_names": names,
      "ignore_index": viz.IGNORE_INDEX,
      "palette": viz.colorize(np.arange(len(names))).tolist(),
      "x_modality": x_modality,
      "x_channels": x_channels if x_modality else None,
      "model": {k: v for k, v in section.items() if k != "pretrained"},
      "data": {"name": config.data.name, "builder_config": config.data.builder_config,
               "crop_hw": list(config.data.crop_hw)},
  }
  with open(os.path.join(out_dir, META_FILE), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  logging.info("Exported %s (%s; %s) to %s in %.1f s", kind, ", ".join(files.values()),
               ", ".join(lowered), out_dir, time.perf_counter() - start)
  return meta


def _write_onnx(fn, specs, out_dir: str, kind: str) -> dict[str, Any] | None:
  """`onnx_export.write` of the float32 `fn`: meta.json's "onnx" entry (with its "file"), or None
  (logged) where jax2onnx is not installed or the network does not convert."""
  from lix_jax.experiments import onnx_export  # noqa: PLC0415
  name = onnx_export.artifact_name(kind)
  try:
    return dict(onnx_export.write(fn, specs, os.path.join(out_dir, name), model_name=kind),
                file=name)
  except ImportError as e:
    logging.warning("No %s: %s (pip install 'lix_jax[onnx]')", name, e)
  except Exception as e:  # noqa: BLE001  (a finished run keeps its other artifacts)
    logging.warning("No %s: the %s does not convert (%s: %s)", name, kind, type(e).__name__,
                    str(e)[:300])
  return None


def _inputs_doc(x_modality: str | None, x_channels: int) -> list[dict[str, Any]]:
  inputs = [{"name": "image", "dtype": "uint8", "layout": "NHWC", "shape": ["b", "H", "W", 3],
             "doc": "RGB, 0..255, not normalised (the artifact normalises)"}]
  if x_modality:
    units = {"depth": "metres", "disparity": "pixels", "normal": "unit vectors (camera frame)"}
    inputs.append({"name": "x", "dtype": "float32", "layout": "NHWC",
                   "shape": ["b", "H", "W", x_channels], "modality": x_modality,
                   "doc": f"raw {x_modality} in {units[x_modality]}, 0 = missing (scaled inside)"})
  return inputs


def _version() -> str:
  import lix_jax  # noqa: PLC0415
  return lix_jax.__version__


def _write_bytes(path: str, blob: bytes) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(blob)
  os.replace(tmp, path)  # Never a half-written artifact under the final name.


# -------------------------------------------------------------------------------------------------
# Reading (jax and numpy only).
# -------------------------------------------------------------------------------------------------
class _Loaded:
  """What every loaded artifact shares: its `meta.json`, input checks and palette."""

  def __init__(self, meta: dict[str, Any]):
    self.meta = meta

  def _inputs(self, image, x, stride: int | None = None) -> tuple[np.ndarray, ...]:
    """(image uint8 [B, H, W, 3][, x float32]) checked against meta.json (and H, W multiples of
    `stride` where the runtime needs them)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
      raise ValueError(f"image must be uint8 [B, H, W, 3], got {image.dtype} {image.shape}")
    if stride and (image.shape[1] % stride or image.shape[2] % stride):
      raise ValueError(f"image of size {image.shape[1:3]}: H and W must be multiples of {stride} "
                       "(export.segment pads)")
    if not self.meta.get("x_modality"):
      return (image,)
    if x is None:
      raise ValueError(f"this {self.meta['kind']} also takes x ({self.meta['x_modality']})")
    return image, np.asarray(x, np.float32)

  def colorize(self, labels) -> np.ndarray:
    """[..., H, W] class ids -> [..., H, W, 3] uint8 with meta.json's palette (255 black)."""
    return palette_lut(self.meta)[np.asarray(labels).astype(np.int64)]


class Artifact(_Loaded):
  """A loaded `.jaxexport`: `labels, logits = artifact(image_uint8[, x])`.

  Attributes:
    meta: the `meta.json` contents.
    exported: the `jax.export.Exported`.
  """

  def __init__(self, exported, meta: dict[str, Any]):
    super().__init__(meta)
    self.exported = exported

  def __call__(self, image, x=None):
    """image uint8 [B, H, W, 3] (and x float32 [B, H, W, Cx] for a teacher) -> (labels, logits)."""
    return self.exported.call(*self._inputs(image, x))


class OnnxArtifact(_Loaded):
  """A loaded `.onnx` (onnxruntime, no jax), called as `Artifact`.

  Attributes:
    meta: the `meta.json` contents.
    session: the `onnxruntime.InferenceSession`.
  """

  def __init__(self, session, meta: dict[str, Any]):
    super().__init__(meta)
    self.session = session

  def __call__(self, image, x=None) -> tuple[np.ndarray, np.ndarray]:
    """image uint8 [B, H, W, 3] (and x float32 [B, H, W, Cx] for a teacher), H and W multiples of
    the stride -> (labels int32 [B, H, W], logits float32 [B, H, W, K])."""
    from lix_jax.experiments import onnx_export  # noqa: PLC0415  (its names; NumPy only)
    feeds = dict(zip(onnx_export.INPUT_NAMES, self._inputs(image, x, int(self.meta["stride"]))))
    labels, logits = self.session.run(list(onnx_export.OUTPUT_NAMES), feeds)
    return labels, logits


def segment(artifact: Artifact, image, x=None) -> tuple[np.ndarray, np.ndarray]:
  """Runs `artifact` on images of any size: pads to multiples of the stride, crops back.

  Args:
    artifact: a loaded `Artifact`.
    image: uint8 [B, H, W, 3] (or [H, W, 3]: one image) RGB.
    x: the teacher's raw X, float32 [B, H, W, Cx] (or [H, W, Cx]); padded with 0 (missing).

  Returns:
    (labels int32 [B, H, W], logits float32 [B, H, W, K]) as NumPy (without the batch axis when
    `image` had none). The padding is the mean colour rounded to uint8 (about 0 after
    normalisation, where the network's own padding of other sizes is exactly 0).
  """
  image = np.asarray(image)
  single = image.ndim == 3
  if single:
    image, x = image[None], (None if x is None else np.asarray(x)[None])
  stride = int(artifact.meta["stride"])
  h, w = image.shape[1:3]
  pads = ((0, 0), (0, -h % stride), (0, -w % stride))
  if pads[1][1] or pads[2][1]:
    fill = np.round(np.asarray(artifact.meta["normalization"]["mean"])).astype(np.uint8)
    padded = np.broadcast_to(fill, (image.shape[0], h + pads[1][1], w + pads[2][1], 3)).copy()
    padded[:, :h, :w] = image
    image = padded
    if x is not None:
      x = np.pad(np.asarray(x, np.float32), pads + ((0, 0),))
  labels, logits = artifact(image, x)
  labels, logits = np.asarray(labels)[:, :h, :w], np.asarray(logits)[:, :h, :w]
  return (labels[0], logits[0]) if single else (labels, logits)


def palette_lut(meta: dict[str, Any]) -> np.ndarray:
  """A 256-entry uint8 colour table from meta.json's palette; other ids (and 255) black."""
  lut = np.zeros((256, 3), np.uint8)
  palette = np.asarray(meta["palette"], np.uint8)
  lut[:len(palette)] = palette
  return lut


def load(path: str, dtype: str = "float32"):
  """Loads an artifact: `path` is a `.jaxexport` or `.onnx` file (its `meta.json` next to it) or
  an export directory (then `dtype` picks the variant: "float32", "bfloat16" or "onnx"). Returns
  an `Artifact`, or for ONNX an `OnnxArtifact` (onnxruntime, no jax) called alike."""
  if os.path.isdir(path):
    meta = read_meta(path)
    if dtype not in meta["artifacts"]:
      raise KeyError(f"{path}: no {dtype!r} artifact in meta.json (it has "
                     f"{sorted(meta['artifacts'])})")
    return load(os.path.join(path, meta["artifacts"][dtype]))
  meta = read_meta(os.path.dirname(path) or ".")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such exported artifact")
  if path.endswith(".onnx"):
    import onnxruntime  # noqa: PLC0415
    from lix_jax.experiments import onnx_export  # noqa: PLC0415  (its names; NumPy only)
    return OnnxArtifact(onnxruntime.InferenceSession(path, providers=list(onnx_export.PROVIDERS)),
                        meta)
  import jax  # noqa: PLC0415
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  return Artifact(exported, meta)


def read_meta(export_dir: str) -> dict[str, Any]:
  path = os.path.join(export_dir, META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: an exported artifact needs its meta.json next to it")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
