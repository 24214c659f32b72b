r"""ImageNet weights from timm / torchvision ResNet checkpoints (DESIGN §4 "ImageNet weights").

Three steps, each usable on its own:

* `read_torch_checkpoint(path)`: a `.safetensors` file (read with the `safetensors` package's NumPy
  API, no torch needed) or a `.pth` / `.pt` / `.bin` pickle (only when torch is importable, and
  then with `weights_only=True`, so a file from the internet cannot run code) → {name: ndarray}.
* `convert_torch_resnet(state_dict, backbone=...)`: torchvision names → the variables of
  `make_backbone(backbone, width=1.0, stem="imagenet")`. timm's ResNets (`resnet18.a1_in1k`,
  `resnet50.a1_in1k`, ...) use the same names. The backbone is torchvision's ResNet v1.5 (stride on
  the 3×3 conv of a bottleneck, BN eps 1e-5, 3×3/2 max-pool with padding 1), so the converted
  stage outputs equal torchvision's `layer1..layer4` outputs (tests/test_pretrained.py checks this
  against an independent NumPy forward).
* `load_imagenet_encoders(model, variables, path)`: freshly initialised variables of a `Student`
  or `Teacher` with the encoder(s) replaced; what `train.task.Task.init_state` calls when
  `student.pretrained` / `teacher.pretrained` is set.

Getting the weights (on a machine with internet; lix_jax itself downloads nothing), e.g. timm's:

  huggingface-cli download timm/resnet50.a1_in1k model.safetensors \
      --local-dir workdirs/weights/resnet50.a1_in1k
  huggingface-cli download timm/resnet18.a1_in1k model.safetensors \
      --local-dir workdirs/weights/resnet18.a1_in1k

then `--config.teacher.pretrained=workdirs/weights/resnet50.a1_in1k/model.safetensors` (and the
student's likewise). A `.pth` on a machine without torch: save it as safetensors where torch is
installed (the error message gives the command, `TO_SAFETENSORS`).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lix_jax.models.backbones import make_backbone

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
# Wrappers that training scripts put around a state dict, and prefixes of wrapped models
# (`DataParallel` → "module.", timm's EMA / train scripts → "model.").
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
KEY_PREFIXES = ("module.", "model.")
# Converts a torch pickle to safetensors (run where torch is installed); `{src}`, `{dst}`: paths.
TO_SAFETENSORS = (
    "python -c \"import torch, safetensors.torch as st; "
    "sd = torch.load('{src}', map_location='cpu', weights_only=True); "
    "sd = sd.get('state_dict', sd.get('model', sd)); "
    "st.save_file({{k: v.contiguous() for k, v in sd.items()}}, '{dst}')\"")


def _unwrap(checkpoint: Any) -> Any:
  """The state dict inside `{"state_dict": ...}` / `{"model": ...}` wrappers (nested or not)."""
  while isinstance(checkpoint, Mapping):
    inner = next((checkpoint[k] for k in WRAPPER_KEYS
                  if isinstance(checkpoint.get(k), Mapping)), None)
    if inner is None:
      return checkpoint
    checkpoint = inner
  return checkpoint


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torchvision / timm checkpoint into NumPy arrays.

  Args:
    path: a `.safetensors` file, or a `.pth` / `.pt` / `.bin` file saved by `torch.save` (read only
      when torch is importable). A `state_dict` / `model` wrapper key is unwrapped.

  Returns:
    {torch name: ndarray}, e.g. "layer1.0.conv1.weight" → float32 [64, 64, 3, 3] (OIHW).

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: an unknown extension, or a pickle without torch installed (the message says how to
      convert it to safetensors).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == SAFETENSORS_SUFFIX:
    from safetensors.numpy import load_file  # noqa: PLC0415  (only the trainer needs it)
    return dict(load_file(path))
  if suffix not in TORCH_SUFFIXES:
    raise ValueError(f"{path}: unknown checkpoint extension {suffix!r}; expected "
                     f"{SAFETENSORS_SUFFIX} or one of {list(TORCH_SUFFIXES)}")
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    command = TO_SAFETENSORS.format(src=path, dst=os.path.splitext(path)[0] + SAFETENSORS_SUFFIX)
    raise ValueError(f"{path}: reading a {suffix} file needs torch, which is not installed; save "
                     f"it as safetensors where torch is installed: {command}") from None
  # weights_only: a pickle from the internet must not be able to run code.
  state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
  out = {}
  for name, value in state.items():
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu()
      out[str(name)] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def _strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  state = dict(state_dict)
  while state:
    prefix = next((p for p in KEY_PREFIXES if all(k.startswith(p) for k in state)), None)
    if prefix is None:
      break
    state = {k[len(prefix):]: v for k, v in state.items()}
  return state


def _torch_name(path: tuple[str, ...]) -> str:
  """Torch name of a backbone variable path, e.g. ("stage2", "block0", "proj_bn", "mean") →
  "layer2.0.downsample.1.running_mean"."""
  *module, leaf = path
  if module[0] == "stem":
    prefix = {"conv": "conv1", "bn": "bn1"}[module[1]]
  else:
    stage = re.fullmatch(r"stage(\d)", module[0]).group(1)
    block = re.fullmatch(r"block(\d+)", module[1]).group(1)
    layer = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(module[2], module[2])
    prefix = f"layer{stage}.{block}.{layer}"
  suffix = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
            "var": "running_var"}[leaf]
  return f"{prefix}.{suffix}"


def _ignored(name: str) -> bool:
  return name.startswith("fc.") or name.endswith(".num_batches_tracked")


def backbone_shapes(backbone: str, image_channels: int = 3) -> dict[str, Any]:
  """Abstract variables {"params", "batch_stats"} of `make_backbone(backbone, width=1.0,
  stem="imagenet")` (ShapeDtypeStructs; no compute)."""
  model = make_backbone(backbone, width=1.0, stem="imagenet")
  image = jax.ShapeDtypeStruct((1, 32, 32, image_channels), jnp.float32)
  return dict(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image))


def convert_torch_resnet(state_dict: Mapping[str, Any], *, backbone: str) -> dict[str, Any]:
  """Maps a torchvision / timm ResNet state dict onto a lix_jax backbone at width 1.0.

  Names: `conv1`→`stem/conv`, `bn1`→`stem/bn`, `layerL.B.convK`/`bnK`→
  `stageL/blockB/convK`/`bnK`, `layerL.0.downsample.0/1`→`stageL/block0/proj_conv`/`proj_bn`.
  Conv weights (O, I, H, W) → kernels (H, W, I, O); BN `weight`/`bias` → params `scale`/`bias`,
  `running_mean`/`running_var` → batch_stats `mean`/`var`. `fc.*` and `*.num_batches_tracked` are
  dropped; a common `module.` / `model.` prefix is removed.

  Args:
    state_dict: {torch name: array} (e.g. from `read_torch_checkpoint`).
    backbone: "resnet18" | "resnet34" | "resnet50".

  Returns:
    {"params": ..., "batch_stats": ...} nested dicts of float32 NumPy arrays, the variables of
    `make_backbone(backbone, width=1.0, stem="imagenet")`.

  Raises:
    ValueError: one line naming the first missing, unexpected or mis-shaped key (with both shapes).
  """
  state = {k: v for k, v in _strip_prefixes(state_dict).items() if not _ignored(k)}
  abstract = backbone_shapes(backbone)
  leaves = [(tuple(str(p.key) for p in path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]]
  names = [_torch_name(keys[1:]) for keys, _ in leaves]  # keys[0] is the collection.
  missing = [n for n in names if n not in state]
  if missing:
    raise ValueError(f"{backbone} checkpoint: key {missing[0]!r} is missing ({len(missing)} "
                     f"missing in all; is it a checkpoint of another backbone?)")
  out: dict[str, Any] = {}
  for (keys, leaf), name in zip(leaves, names):
    value = np.asarray(state[name], np.float32)
    if keys[-1] == "kernel":
      want = (leaf.shape[3], leaf.shape[2], leaf.shape[0], leaf.shape[1])
      if value.shape != want:
        raise ValueError(f"{backbone} checkpoint: key {name!r} has shape {value.shape}, "
                         f"expected {want} (OIHW; is it a checkpoint of another backbone?)")
      value = value.transpose(2, 3, 1, 0)
    elif value.shape != leaf.shape:
      raise ValueError(f"{backbone} checkpoint: key {name!r} has shape {value.shape}, "
                       f"expected {leaf.shape}")
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = np.ascontiguousarray(value)
  extra = sorted(set(state) - set(names))
  if extra:
    raise ValueError(f"{backbone} checkpoint: unexpected key {extra[0]!r} ({len(extra)} unexpected "
                     f"in all; is it a checkpoint of another backbone?)")
  return out


def x_stem_kernel(rgb_kernel: np.ndarray, x_channels: int) -> np.ndarray:
  """First conv of an X encoder from an RGB one: the mean over input channels, repeated.

  Args:
    rgb_kernel: [kh, kw, 3, C] (HWIO).
    x_channels: X's channels (1 depth/disparity, 3 normals).

  Returns:
    [kh, kw, x_channels, C].
  """
  mean = np.mean(np.asarray(rgb_kernel, np.float32), axis=2, keepdims=True)
  return np.repeat(mean, x_channels, axis=2)


def _encoder_paths(model) -> list[tuple[str, ...]]:
  # Imported here: networks imports this package's backbones, not the other way round.
  from lix_jax.models.networks import Student, Teacher  # noqa: PLC0415
  if isinstance(model, Student):
    return [("backbone",)]
  if isinstance(model, Teacher):
    return [("fusion", "rgb"), ("fusion", "x")]  # Same paths for intermediate and late fusion.
  raise TypeError(f"load_imagenet_encoders: expected a Student or Teacher, got "
                  f"{type(model).__name__}")


def _replace(tree: Mapping[str, Any], path: tuple[str, ...], value: Any, where: str) -> dict:
  if path[0] not in tree:
    raise KeyError(f"{where}: {'/'.join(path)} is not in the variables (keys {sorted(tree)})")
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else _replace(tree[path[0]], path[1:], value, where)
  return out


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def check_imagenet_fit(model, path: str | os.PathLike) -> str:
  """Checks, before anything is compiled, that `path` exists and that `model` can take ImageNet
  weights (width 1.0, stem "imagenet").

  Args:
    model: a `Student` or `Teacher`.
    path: the checkpoint, e.g. the value of `student.pretrained`.

  Returns:
    The config key the path belongs to: "student.pretrained" or "teacher.pretrained".

  Raises:
    FileNotFoundError: no file at `path` (the message names the config key and the path).
    ValueError: the model's width or stem does not fit (the message names the config key).
  """
  key = "teacher.pretrained" if len(_encoder_paths(model)) == 2 else "student.pretrained"
  section = key.split(".")[0]
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{key}={path!r}: no such file")
  if float(model.width) != 1.0:
    raise ValueError(f"{key}={path!r} needs {section}.width=1.0 (ImageNet ResNets), got "
                     f"{section}.width={model.width}")
  if model.stem != "imagenet":
    raise ValueError(f"{key}={path!r} needs {section}.stem='imagenet' (ImageNet ResNets), got "
                     f"{section}.stem={model.stem!r}")
  return key


def load_imagenet_encoders(model, variables: Mapping[str, Any], path: str | os.PathLike
                           ) -> dict[str, Any]:
  """Replaces the encoder(s) of freshly initialised variables by ImageNet weights.

  A `Student`'s `backbone` gets the checkpoint. A `Teacher`'s RGB encoder (`fusion/rgb`) gets it
  too, and its X encoder (`fusion/x`) starts from the same weights with the first conv replaced by
  `x_stem_kernel` (the RGB kernel's mean over input channels, repeated for `x_channels`); late
  fusion's two branches are loaded the same way. Decoders, fusion blocks and the classifier keep
  their initial values.

  Args:
    model: the `Student` or `Teacher` the variables belong to (width 1.0, stem "imagenet").
    variables: {"params", "batch_stats"} of `model.init(...)`.
    path: the checkpoint (see `read_torch_checkpoint`), e.g. the value of `student.pretrained`.

  Returns:
    A new variables dict; float32 jax arrays in the replaced subtrees.

  Raises:
    FileNotFoundError, ValueError: see `check_imagenet_fit`; ValueError also when the checkpoint
      does not fit the backbone (see `convert_torch_resnet`; the message names the config key).
  """
  key = check_imagenet_fit(model, path)
  path = os.fspath(path)
  paths = _encoder_paths(model)
  try:
    converted = convert_torch_resnet(read_torch_checkpoint(path), backbone=model.backbone)
  except ValueError as e:
    raise ValueError(f"{key}={path!r}: {e}") from None
  out = dict(variables)
  for enc in paths:
    loaded = converted
    if enc[-1] == "x":
      kernel = x_stem_kernel(converted["params"]["stem"]["conv"]["kernel"], model.x_channels)
      stem = dict(converted["params"]["stem"], conv={"kernel": kernel})
      loaded = dict(converted, params=dict(converted["params"], stem=stem))
    for col in ("params", "batch_stats"):
      old = _get(variables[col], enc)
      new = jax.tree.map(lambda a, b: jnp.asarray(b, a.dtype), old, loaded[col])
      out[col] = _replace(out[col], enc, new, key)
  return out
