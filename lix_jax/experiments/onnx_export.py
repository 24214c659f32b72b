"""ONNX artifacts of a finished network (DESIGN §6 "Export"); `export.load` runs one (onnxruntime).

`export.export_run` also writes `<workdir>/export/{student,teacher}.onnx`: the same function as the
float32 `.jaxexport` (`export.deployable_fn`: uint8 RGB in, normalisation inside, int32 labels and
float32 logits out), opset `OPSET`, batch `b` and H = 32·h, W = 32·w symbolic, converted by
jax2onnx. Inputs are named "image" (and "x" for a teacher), outputs "labels" and "logits".

How it converts. jax2onnx monkey-patches flax linen layers (`max_pool`, `Conv`, `BatchNorm`) while
it traces, and its patched layers mix up the NHWC layout (seen with 0.17.1: onnxruntime refuses the
graph, "[ShapeInferenceError] Incompatible dimensions" at an Add). So the
network is first traced by jax itself to a jaxpr of lax primitives, and jax2onnx converts a
function that replays that jaxpr (`lax_level`): no flax layer is called while jax2onnx traces.
Two primitives are replayed differently, with the same numbers:
  * `reduce_window_max` over an NHWC window (1, k, k, 1) (the stem's max-pool): jax2onnx lowers a
    rank-n window to an n-D `MaxPool`, which onnxruntime runs only for n ≤ 3. It is replayed on
    [B·C, H, W] (a transpose and reshape around it): a 3-D window (1, k, k).
  * jax2onnx resolves a symbolic size (h, w) only from a value that has it as a dimension; the
    teacher's gated fusion averages over 64·h·w pixels before any value of size h exists. A
    stride-32 slice of the image ([b, h, w, C]) is taken first so that h and w resolve.
Nested `jit` and `custom_jvp_call` (ReLU) are inlined. Only jax2onnx's lax-level plugins are
loaded (`_load_lax_plugins`, ~1.5 s; all of them, whose equinox / flax plugins build example
networks when imported, take ~9 s with 0.12.5 and 15-25 s with 0.17.1 on 2 busy CPU cores, once
per process; a later `jax2onnx.to_onnx` of a flax module in the same process then lacks its flax
plugins). Both rewrites are needed with 0.12.5 and 0.17.1 alike. Pinned: jax2onnx 0.12.5, the newest whose
requirements admit orbax-checkpoint 0.12 (0.13 and later want < 0.11.37); 0.17.1 converts the
same way (checked at opset 17).

Writing needs jax and jax2onnx (`pip install lix_jax[onnx]`); reading (`export.load`,
`export.OnnxArtifact`) needs NumPy and onnxruntime only.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import time
from typing import Any

# 18, not 17: jax2onnx 0.12.5 writes the teacher's `jnp.any` as ReduceMax with an axes input
# (opset 18) whatever the opset asked for. onnxruntime >= 1.14 and TensorRT >= 10 run opset 18.
OPSET = 18
INPUT_NAMES = ("image", "x")
OUTPUT_NAMES = ("labels", "logits")
PROVIDERS = ("CPUExecutionProvider",)


def artifact_name(kind: str) -> str:
  """`student.onnx` or `teacher.onnx`."""
  return f"{kind}.onnx"


# -------------------------------------------------------------------------------------------------
# Writing (jax, jax2onnx).
# -------------------------------------------------------------------------------------------------
def _max_pool_3d(x, params):
  """`reduce_window_max` of NHWC `x` with window (1, kh, kw, 1), run on [B·C, H, W]."""
  import jax.numpy as jnp  # noqa: PLC0415
  from jax import lax  # noqa: PLC0415
  b, h, w, c = x.shape
  y = jnp.transpose(x, (0, 3, 1, 2)).reshape(b * c, h, w)
  y = lax.reduce_window(y, jnp.array(-jnp.inf, y.dtype), lax.max,
                        (1, *params["window_dimensions"][1:3]), (1, *params["window_strides"][1:3]),
                        ((0, 0), *params["padding"][1:3]))
  return jnp.transpose(y.reshape(b, c, *y.shape[1:]), (0, 2, 3, 1))


def _nhwc_spatial_window(params) -> bool:
  window, dilations = params["window_dimensions"], params["window_dilation"]
  return (len(window) == 4 and window[0] == window[3] == 1 and set(dilations) == {1}
          and set(params["base_dilation"]) == {1} and params["window_strides"][0] == 1
          and params["window_strides"][3] == 1 and params["padding"][0] == params["padding"][3]
          == (0, 0))


def _replay(jaxpr, consts, *args) -> list[Any]:
  """`jax.core.eval_jaxpr` with nested `jit` / `custom_jvp_call` inlined and the max-pool
  replayed as `_max_pool_3d` (see the module doc)."""
  from jax.extend import core  # noqa: PLC0415
  env = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  read = lambda v: v.val if isinstance(v, core.Literal) else env[v]
  for eqn in jaxpr.eqns:
    invals, name = [read(v) for v in eqn.invars], eqn.primitive.name
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if name == "reduce_window_max" and _nhwc_spatial_window(eqn.params):
      outs = [_max_pool_3d(invals[0], eqn.params)]
    elif name in ("jit", "custom_jvp_call", "custom_vjp_call") and inner is not None:
      outs = _replay(inner.jaxpr, inner.consts, *invals)
    else:
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def lax_level(fn, specs):
  """`fn` traced by jax (no converter patches active) and replayed by `_replay`: what jax2onnx
  converts. `specs` are `export.input_specs(...)` (the symbolic dims are reused as they are)."""
  import jax  # noqa: PLC0415
  from jax import lax  # noqa: PLC0415
  closed = jax.make_jaxpr(fn)(*specs)
  stride = 32  # export.STRIDE: H = 32·h, W = 32·w.

  def replayed(*args):
    image = args[0]
    # A [b, h, w, 3] value, so that jax2onnx can resolve h and w (see the module doc).
    lax.slice(image, (0,) * 4, image.shape, (1, stride, stride, 1))
    return tuple(_replay(closed.jaxpr, closed.consts, *args))

  return replayed


def _load_lax_plugins() -> None:
  """Registers jax2onnx's plugins for jax / lax primitives only (all that `lax_level` needs)."""
  from jax2onnx.plugins import plugin_system  # noqa: PLC0415
  if getattr(plugin_system, "_already_imported_plugins", True):
    return
  try:
    root = os.path.dirname(plugin_system.__file__)
    plugin_system._import_tree(pathlib.Path(root, "jax"), "jax2onnx.plugins.jax")
    plugin_system._already_imported_plugins = True
  except AttributeError:  # another jax2onnx layout: load every plugin (slower, same result)
    plugin_system.import_all_plugins()


def convert(fn, specs, *, model_name: str = "lix_jax", opset: int = OPSET):
  """The ONNX `ModelProto` of `fn` (an `export.deployable_fn`) at the symbolic `specs`."""
  import jax2onnx  # noqa: PLC0415
  _load_lax_plugins()
  serde = logging.getLogger("onnx_ir.serde")  # "value type ... not known" for every constant
  level = serde.level
  serde.setLevel(logging.ERROR)
  try:  # (jax2onnx 0.12.5 prints "DEBUG: conv_dtype_enum=FLOAT" per convolution to stdout)
    with contextlib.redirect_stdout(io.StringIO()):
      return jax2onnx.to_onnx(lax_level(fn, specs), list(specs), model_name=model_name,
                              opset=opset, input_names=INPUT_NAMES[:len(specs)],
                              output_names=OUTPUT_NAMES)
  finally:
    serde.setLevel(level)


def write(fn, specs, path: str, *, model_name: str) -> dict[str, Any]:
  """Converts `fn` and writes it to `path` (atomically); returns meta.json's "onnx" entry."""
  from importlib import metadata  # noqa: PLC0415
  import onnx  # noqa: PLC0415
  start = time.perf_counter()
  model = convert(fn, specs, model_name=model_name)
  tmp = f"{path}.tmp"
  onnx.save(model, tmp)
  os.replace(tmp, path)  # Never a half-written artifact under the final name.
  converter = f"jax2onnx {metadata.version('jax2onnx')}"  # (0.12.5 has no __version__)
  logging.info("Wrote %s (%s) in %.1f s", path, converter, time.perf_counter() - start)
  return {"opset": OPSET, "inputs": list(INPUT_NAMES[:len(specs)]),
          "outputs": list(OUTPUT_NAMES), "converter": converter}
