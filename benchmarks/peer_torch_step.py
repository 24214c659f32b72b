r"""The LIX distillation step written plainly in PyTorch, timed against lix_jax's (issue 22).

What a user would otherwise write: torchvision ResNets, an FPN decoder, the duplex RGB-X teacher
with gated intermediate fusion, DKD terms as in mdistiller (Zhao et al.'s reference code) weighted
by lix_jax's default DWLD controller (`balanced_sym`, DESIGN §2.3), ARFD at λ_KR = 0 (linear CKA
through 1×1 adapters at the taps, DESIGN §2.4), cross-entropy and AdamW. One process imports
both frameworks and, on the same batch and the same CPU, times in interleaved rounds
(`benchmarks.rounds.Rounds`; each round calls every entry once, so load that drifts hits all
alike):

- lix_jax: `steps.distill_step` (method lix) as the loop builds it (`step_bench.Bench`:
  `DataParallel.wrap`, jitted, donated state; its non-finite guard and l2 norms included);
- torch eager: teacher forward under `no_grad` (eval mode), student forward/backward,
  `AdamW.step()`;
- torch.compile (mode default): the same, with the forward and the losses compiled
  (`torch.compile`, inductor; AOTAutograd compiles the backward); `AdamW.step()` eager.

Before timing, lix_jax's random weights are converted into the torch modules (HWIO → OIHW, Dense
kernels transposed, BN scale/bias/mean/var; names as `lix_jax.models.pretrained`) and one step is
checked on the same batch: the loss, each term and the global gradient norm must agree ≤ 1e-4
relative (`--tol`), for eager and for the compiled step.

Models: torchvision has no "deep" stem or width multiplier, so both sides use width 1.0, the
"imagenet" stem and decoder width 128 (the width-1.0 default); ResNet-18 student and ResNet-18
duplex teacher (lix_jax's default backbones; `--set teacher.backbone=resnet50` for the paper's
teacher). 64×192 crops, 8 labelled + 8 unlabelled images (the step's default regime, DESIGN §2.6):
the teacher and the student each run on all 16 images.

Differences kept on purpose (each a user's plain choice, none changes a value beyond rounding):
DKD's binary KL is formed from log-probabilities as in mdistiller, not lix_jax's softplus form or
its closed-form gradient; linear CKA has no degenerate-feature guard; the torch step has no
non-finite guard; PyTorch's BN running variance is unbiased (flax's is not: running statistics
differ, the step's loss and gradient do not).

Install (a separate venv: torch is not a lix_jax dependency; on x86_64 pip takes the two wheels
from this machine's disk, about 5.5 GB):
  python3 -m venv /work/torch_venv
  /work/torch_venv/bin/pip install torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip freeze > /tmp/pins.txt                  # the project venv's exact versions
  /work/torch_venv/bin/pip install -r /tmp/pins.txt     # (jax 0.10.2, flax 0.12.8, ...)

Usage (from the repository root; on an idle machine: load makes torch's threads collapse; the log
is named by what, where and when, as under results/cpu/):
  LOG=results/cpu/peer_torch_step_cpu2_$(date -u +%Y-%m).txt
  /work/torch_venv/bin/python benchmarks/peer_torch_step.py --rounds 8 --out $LOG
  /work/torch_venv/bin/python benchmarks/peer_torch_step.py --rounds 3 --no_compile   # quick
  # a cold torch.compile, and torch eager at 1 thread too (a diagnostic for loaded machines):
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) /work/torch_venv/bin/python \
      benchmarks/peer_torch_step.py --one_thread --out $LOG --append
  # one core each (taskset confines the whole process, XLA's thread pool included):
  taskset -c 1 /work/torch_venv/bin/python benchmarks/peer_torch_step.py --threads 1 \
      --out $LOG --append
"""
from __future__ import annotations

import os

# One CPU device (XLA's default); before step_bench is imported, which would ask for 8.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=1").strip()

import argparse  # noqa: E402
import copy  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script from a checkout without `pip install .`
  sys.path.insert(0, str(ROOT))

from lix_jax import config as config_lib  # noqa: E402
from lix_jax.models import pretrained  # noqa: E402
from lix_jax.train import sharding  # noqa: E402
from benchmarks import step_bench  # noqa: E402
from benchmarks.rounds import Rounds  # noqa: E402

try:  # The lix_jax side stays importable without torch (the project venv has none).
  import torch
  import torch.nn.functional as F
  import torchvision
  from torch import nn
except ImportError:
  torch = F = torchvision = nn = None
_Module = nn.Module if nn is not None else object

IGNORE = 255
INSTALL = ("python3 -m venv /work/torch_venv && /work/torch_venv/bin/pip install torch==2.14.1 "
           "torchvision==0.29.1 (then lix_jax's pins, see the module docstring)")
# This benchmark's models: what torchvision has (width 1.0, ImageNet stem), 8 + 8 images.
DEFAULT_SETS = {
    "teacher.width": 1.0, "teacher.stem": "imagenet", "teacher.decoder_channels": 128,
    "student.width": 1.0, "student.stem": "imagenet", "student.decoder_channels": 128,
    "train.batch_size": 8, "distill.unlabeled_batch_size": 8, "data.crop_hw": (64, 192)}


# --- torch models ------------------------------------------------------------------------------


def resnet(backbone: str, in_channels: int):
  """A torchvision ResNet (random init) without its head; a first conv for `in_channels`."""
  net = getattr(torchvision.models, backbone)(weights=None)
  if in_channels != 3:
    net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
  del net.fc, net.avgpool
  return net


def embed(net, x):
  return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def stages(net):
  return [net.layer1, net.layer2, net.layer3, net.layer4]


def stage_channels(backbone: str) -> list[int]:
  expansion = 4 if backbone == "resnet50" else 1
  return [c * expansion for c in (64, 128, 256, 512)]


class FPNDecoder(_Module):
  """As lix_jax's: lateral 1×1 convs (bias), top-down bilinear upsample + add, 3×3 conv+BN+ReLU."""

  def __init__(self, in_channels, channels):
    super().__init__()
    for i, c in enumerate(in_channels):
      setattr(self, f"lateral{i + 1}", nn.Conv2d(c, channels, 1))
    self.num_levels = len(in_channels)
    self.smooth = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    self.smooth_bn = nn.BatchNorm2d(channels)

  def forward(self, feats):
    laterals = [getattr(self, f"lateral{i + 1}")(f) for i, f in enumerate(feats)]
    y = laterals[-1]
    for lateral in reversed(laterals[:-1]):
      y = F.interpolate(y, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
    return F.relu(self.smooth_bn(self.smooth(y)))


class GatedFusion(_Module):
  """Squeeze-excite gates over concat(rgb, x): `g_rgb ⊙ rgb + g_x ⊙ x` (lix_jax's fusion.py)."""

  def __init__(self, channels, reduction=16):
    super().__init__()
    self.squeeze = nn.Linear(2 * channels, max(8, 2 * channels // reduction))
    self.excite = nn.Linear(max(8, 2 * channels // reduction), 2 * channels)

  def forward(self, rgb, x):
    c = rgb.shape[1]
    s = torch.cat([rgb, x], 1).mean((2, 3))
    g = torch.sigmoid(self.excite(F.relu(self.squeeze(s))))[:, :, None, None]
    return g[:, :c] * rgb + g[:, c:] * x


class Teacher(_Module):
  """Duplex encoder, a fusion block after each stage feeding the next RGB stage, one FPN."""

  def __init__(self, backbone, x_channels, num_classes, decoder_channels, fusion_block="gated"):
    super().__init__()
    self.rgb, self.x = resnet(backbone, 3), resnet(backbone, x_channels)
    chans = stage_channels(backbone)
    self.gated = fusion_block == "gated"
    if self.gated:
      for i, c in enumerate(chans):
        setattr(self, f"fuse{i + 1}", GatedFusion(c))
    self.decoder = FPNDecoder(chans, decoder_channels)
    self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

  def forward(self, image, x):
    r, s = embed(self.rgb, image), embed(self.x, x)
    fused = []
    for i, (rgb_stage, x_stage) in enumerate(zip(stages(self.rgb), stages(self.x))):
      r, s = rgb_stage(r), x_stage(s)
      r = getattr(self, f"fuse{i + 1}")(r, s) if self.gated else r + s
      fused.append(r)
    d = self.decoder(fused)
    logits = F.interpolate(self.classifier(d), size=image.shape[-2:], mode="bilinear",
                           align_corners=False)
    return logits, {**{f"stage{i + 1}": f for i, f in enumerate(fused)}, "decoder": d}


class Student(_Module):
  """RGB ResNet → FPN → 1×1 classifier; plus the distillation adapters (1×1 convs per tap)."""

  def __init__(self, backbone, num_classes, decoder_channels, adapter_channels):
    super().__init__()
    self.backbone = resnet(backbone, 3)
    self.decoder = FPNDecoder(stage_channels(backbone), decoder_channels)
    self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
    taps = {f"stage{i + 1}": c for i, c in enumerate(stage_channels(backbone))}
    taps["decoder"] = decoder_channels
    self.adapters = nn.ModuleDict({name: nn.Conv2d(taps[name], c, 1)
                                   for name, c in adapter_channels.items()})

  def forward(self, image):
    x = embed(self.backbone, image)
    feats = []
    for stage in stages(self.backbone):
      x = stage(x)
      feats.append(x)
    d = self.decoder(feats)
    logits = F.interpolate(self.classifier(d), size=image.shape[-2:], mode="bilinear",
                           align_corners=False)
    taps = {**{f"stage{i + 1}": f for i, f in enumerate(feats)}, "decoder": d}
    return logits, {name: adapter(taps[name]) for name, adapter in self.adapters.items()}


# --- lix_jax variables → torch state dicts -------------------------------------------------------

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
         "var": "running_var"}


def torch_name(path: tuple[str, ...]) -> str:
  """Torch name of a lix_jax variable path (collection removed), e.g.
  ("fusion", "rgb", "stage1", "block0", "conv1", "kernel") → "rgb.layer1.0.conv1.weight"."""
  *module, leaf = path
  if module[0] == "backbone":  # Student encoder.
    return "backbone." + pretrained._torch_name(tuple(module[1:]) + (leaf,))
  if module[0] == "fusion" and module[1] in ("rgb", "x"):
    return f"{module[1]}." + pretrained._torch_name(tuple(module[2:]) + (leaf,))
  if module[0] == "fusion":
    module = module[1:]  # fuse{i}/…, decoder/…
  if module == ["classifier", "conv"]:
    module = ["classifier"]
  return ".".join(module + [_LEAF[leaf]])


def to_torch_state(module, variables_by_prefix: dict[str, dict]) -> dict:
  """`module`'s state dict with every tensor taken from lix_jax variables.

  `variables_by_prefix`: torch name prefix ("" or "adapters.") → {"params", "batch_stats"}.
  Every tensor of the module but `num_batches_tracked` must be filled, and no variable left over.
  """
  state = module.state_dict()
  filled = set()
  for prefix, variables in variables_by_prefix.items():
    for col in ("params", "batch_stats"):
      leaves = jax.tree_util.tree_flatten_with_path(variables.get(col, {}))[0]
      for path, value in leaves:
        name = prefix + torch_name(tuple(str(p.key) for p in path))
        value = np.asarray(value, np.float32)
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 else value
        if name not in state or tuple(state[name].shape) != value.shape:
          raise KeyError(f"{name}: {value.shape} has no torch counterpart "
                         f"({tuple(state[name].shape) if name in state else 'missing'})")
        state[name] = torch.from_numpy(np.array(value, np.float32))  # a writable copy
        filled.add(name)
  left = [k for k in state if k not in filled and not k.endswith("num_batches_tracked")]
  if left:
    raise KeyError(f"torch tensors not filled from lix_jax: {left[:5]} ({len(left)} in all)")
  return state


# --- torch losses (DESIGN §2; the same weights as lix_jax's distill config) ---------------------


def masked_mean(x, valid):
  return torch.where(valid, x, torch.zeros_like(x)).sum() / valid.sum().clamp(min=1)


def dkd_terms(s, t, target, tau):
  """Per-pixel (TCLD, NCLD) [N, H, W] as mdistiller's `dkd_loss` computes them, per pixel."""
  gt = F.one_hot(target, s.shape[1]).permute(0, 3, 1, 2).bool()
  p, q = F.softmax(t / tau, 1), F.softmax(s / tau, 1)
  p_y, q_y = (p * gt).sum(1), (q * gt).sum(1)
  b_p, b_q = torch.stack([p_y, 1 - p_y], 1), torch.stack([q_y, 1 - q_y], 1)
  tcld = F.kl_div(torch.log(b_q), b_p, reduction="none").sum(1)
  log_q2 = F.log_softmax(s / tau - 1000.0 * gt, 1)
  p2 = F.softmax(t / tau - 1000.0 * gt, 1)
  ncld = F.kl_div(log_q2, p2, reduction="none").sum(1)
  return tcld, ncld


def class_counts(classes, valid, k):
  idx = torch.where(valid, classes, torch.full_like(classes, k)).flatten()
  return torch.zeros(k + 1, dtype=torch.float32).scatter_add_(
      0, idx, torch.ones_like(idx, dtype=torch.float32))[:k]


@torch.no_grad() if torch is not None else (lambda f: f)
def dwc_weights(s, t, target, valid, tcld, ncld, *, alpha, beta, kappa, gamma, controller):
  """(w_t, w_n) of lix_jax's DWC (DESIGN §2.3): fixed | dynamic | trust | balanced | balanced_sym."""
  v = valid.float()
  if controller == "fixed":
    return alpha * v, beta * v
  inv_kappa = 0.0 if controller == "trust" or math.isinf(kappa) else 1.0 / kappa
  log_rho = F.log_softmax(t, 1).gather(1, target[:, None])[:, 0]
  log_u_t, log_u_n = log_rho + tcld * inv_kappa, ncld * inv_kappa
  if controller in ("balanced", "balanced_sym"):
    k = s.shape[1]
    counts = class_counts(target, valid, k)
    if controller == "balanced_sym":
      pred = s.argmax(1)
      counts = counts + class_counts(pred, valid, k)
    log_counts = counts.clamp(min=1).log()
    log_n = log_counts[target]
    if controller == "balanced_sym":
      log_n = torch.minimum(log_n, log_counts[pred])
    log_u_t, log_u_n = log_u_t - gamma * log_n, log_u_n - gamma * log_n

  def normalise(log_u, scale):
    log_u = torch.where(valid, log_u, torch.full_like(log_u, -math.inf))
    u = torch.where(valid, torch.exp(log_u - log_u.max()), torch.zeros_like(log_u))
    return scale * u / masked_mean(u, valid)

  return normalise(log_u_t, alpha), normalise(log_u_n, beta)


def dwld(s, t, target, valid, cfg):
  tau = cfg["temperature"]
  tcld, ncld = dkd_terms(s, t, target, tau)
  w_t, w_n = dwc_weights(s, t, target, valid, tcld.detach(), ncld.detach(), alpha=cfg["alpha"],
                         beta=cfg["beta"], kappa=cfg["kappa"], gamma=cfg["class_balance"],
                         controller=cfg["controller"])
  return tau**2 * masked_mean(w_t * tcld + w_n * ncld, valid)


def linear_cka_loss(a, t):
  """mean over images of 1 − linear CKA(A, T), pixels as samples (DESIGN §2.4)."""
  a, t = a.flatten(2).transpose(1, 2), t.flatten(2).transpose(1, 2)  # [B, N, C]
  a, t = a - a.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
  fro = lambda x, z: torch.bmm(x.transpose(1, 2), z).square().sum((1, 2))
  cka = fro(a, t) / torch.sqrt(fro(a, a) * fro(t, t))
  return (1 - cka).mean()


def lix_loss(student, teacher, image, x, labels, u_image, u_x, cfg):
  """`L = CE + λ_L·(DWLD + λ_U·DWLD_u) + λ_F·Σ_taps w·L_CKA` (DESIGN §2.5, §2.6); (L, terms)."""
  n = image.shape[0]
  images, xs = torch.cat([image, u_image]), torch.cat([x, u_x])
  with torch.no_grad():
    t_logits, t_taps = teacher(images, xs)
  s_logits, adapted = student(images)
  ce = F.cross_entropy(s_logits[:n], labels.long(), ignore_index=IGNORE)
  valid = labels != IGNORE
  target = torch.where(valid, labels, torch.zeros_like(labels)).long()
  logit = dwld(s_logits[:n], t_logits[:n], target, valid, cfg)
  u_target = t_logits[n:].argmax(1)
  logit_u = dwld(s_logits[n:], t_logits[n:], u_target, torch.ones_like(u_target, dtype=torch.bool),
                 cfg)
  feature = sum(w * linear_cka_loss(adapted[tap], t_taps[tap])
                for tap, w in zip(cfg["taps"], cfg["tap_weights"]))
  total = ce + cfg["lambda_l"] * (logit + cfg["lambda_unlabeled"] * logit_u) + cfg["lambda_f"] * feature
  return total, {"ce": ce, "logit": logit, "logit_unlabeled": logit_u, "feature": feature}


def lr_schedule(optim, num_steps):
  """optax's warm-up + cosine of `state.learning_rate_schedule`, as a Python function of the step."""
  warmup = min(int(optim.warmup_steps), num_steps - 1)
  decay = max(num_steps - warmup, 1)

  def lr(step):
    if step < warmup:
      return optim.learning_rate * step / warmup
    frac = min(step - warmup, decay) / decay
    return optim.learning_rate * 0.5 * (1 + math.cos(math.pi * frac))

  return lr


class TorchStep:
  """A plain PyTorch training step: zero_grad, loss, backward, AdamW step; `compile` wraps the
  loss (teacher forward, student forward, losses) in `torch.compile` (mode default)."""

  def __init__(self, student, teacher, batch, cfg, optim, compile_):
    self.student, self.teacher, self.cfg = student, teacher, cfg
    self.teacher.eval()
    self.student.train()
    decay = [p for p in student.parameters() if p.ndim > 1]
    no_decay = [p for p in student.parameters() if p.ndim <= 1]
    # optax.adamw: b1 0.9, b2 0.999, eps 1e-8, decoupled decay on kernels only (ndim > 1).
    self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=optim.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    self.lr = lr_schedule(optim, 1000)  # as step_bench.Bench's optimizer
    self.step = 0
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))
    self.inputs = (nchw(batch["image"]), nchw(batch["x"]), torch.from_numpy(batch["label"]),
                   nchw(batch["unlabeled_image"]), nchw(batch["unlabeled_x"]))
    loss = lambda *a: lix_loss(self.student, self.teacher, *a, cfg=self.cfg)
    self.loss = torch.compile(loss) if compile_ else loss

  def __call__(self):
    for group in self.opt.param_groups:
      group["lr"] = self.lr(self.step)
    self.opt.zero_grad(set_to_none=True)
    total, terms = self.loss(*self.inputs)
    total.backward()
    self.opt.step()
    self.step += 1
    return total, terms

  def grad_norm(self) -> float:
    return math.sqrt(sum(float(p.grad.double().square().sum()) for p in self.student.parameters()))


class Threads:
  """Calls `fn` with `torch.set_num_threads(n)`, restoring the setting after (a diagnostic entry:
  on an oversubscribed machine OpenMP's barriers wait for descheduled threads)."""

  def __init__(self, fn, n):
    self.fn, self.n = fn, n

  def __call__(self):
    before = torch.get_num_threads()
    torch.set_num_threads(self.n)
    try:
      return self.fn()
    finally:
      torch.set_num_threads(before)


# --- the run ------------------------------------------------------------------------------------


def build_torch(b):
  """Torch teacher and student with lix_jax's random weights (those of `b`, a step_bench.Bench)."""
  c = b.config
  if c.teacher.fusion != "intermediate" or c.distill.lambda_kr != 0 or c.distill.kernel != "linear":
    raise ValueError("the torch peer implements intermediate fusion and ARFD with lambda_kr=0 and "
                     "the linear CKA kernel (lix_jax's defaults) only")
  teacher = Teacher(c.teacher.backbone, b.cx, b.num_classes, c.teacher.decoder_channels,
                    c.teacher.fusion_block)
  teacher.load_state_dict(to_torch_state(teacher, {"": b.t_vars}))
  adapter_channels = {tap: int(b.adapters.out_channels[tap]) for tap in c.distill.taps}
  student = Student(c.student.backbone, b.num_classes, c.student.decoder_channels,
                    adapter_channels)
  params = b.distill_state.params
  student.load_state_dict(to_torch_state(student, {
      "": {"params": params["student"], "batch_stats": b.distill_state.batch_stats},
      "adapters.": {"params": params["adapters"]}}))
  return teacher, student


def distill_cfg(config):
  d = config.distill.to_dict()
  d["tap_weights"] = list(d.get("tap_weights") or [1.0] * len(d["taps"]))
  return d


def compare(lines, name, jax_metrics, torch_total, torch_terms, torch_grad, tol):
  """Rows of the correctness table; returns whether every figure agrees within `tol` relative."""
  ours = {"loss": torch_total, **torch_terms, "l2_grads": torch_grad}
  ok = True
  for key, value in ours.items():
    ref = float(jax_metrics[key])
    value = float(value.detach() if hasattr(value, "detach") else value)
    rel = abs(value - ref) / max(abs(ref), 1e-12)
    ok &= rel <= tol
    lines.append(f"| {name} | {key} | {ref:.7g} | {value:.7g} | {rel:.1e} | "
                 f"{'ok' if rel <= tol else 'MISMATCH'} |")
  return ok


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override on top of this benchmark's defaults (repeatable)")
  parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile entry")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of the check")
  parser.add_argument("--one_thread", action="store_true",
                      help="also time torch eager at 1 thread (diagnostic)")
  parser.add_argument("--out", default="", help="also write the report to this file")
  parser.add_argument("--append", action="store_true", help="append to --out, not overwrite")
  args = parser.parse_args()
  if torch is None:
    sys.exit(f"peer_torch_step needs torch and torchvision in this Python: {INSTALL}")
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  lines = []
  say = lambda s="": (print(s, flush=True), lines.append(s))

  sets = {**DEFAULT_SETS, **step_bench.parse_sets(args.set)}
  config = config_lib.with_overrides(step_bench.load_config(""), sets)
  b = step_bench.Bench(config)
  n_lab, n_unl = config.train.batch_size, config.distill.unlabeled_batch_size
  hw = b.hw
  if hw[0] % 32 or hw[1] % 32:
    raise ValueError(f"crop {hw}: use multiples of 32 (the torch models do not pad)")
  batch = step_bench.make_batch(n_lab, n_unl, hw, b.cx, b.num_classes)
  cfg = distill_cfg(config)
  say("# peer_torch_step: LIX distillation step, PyTorch vs lix_jax, CPU, same run")
  say(f"python {platform.python_version()}, torch {torch.__version__} (threads "
      f"{torch.get_num_threads()}), torchvision {torchvision.__version__}, jax {jax.__version__} "
      f"({jax.default_backend()}, {len(jax.devices())} device, XLA's default threads), "
      f"cpu count {os.cpu_count()} ({len(os.sched_getaffinity(0))} in this process's affinity), "
      f"{platform.machine()}")
  say(f"load avg at start {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} / "
      f"{os.getloadavg()[2]:.2f} (1/5/15 min; it lags by minutes)")
  say(f"models: teacher {config.teacher.backbone} x{config.teacher.width} duplex "
      f"({config.teacher.fusion}, {config.teacher.fusion_block}), student "
      f"{config.student.backbone} x{config.student.width}, stem imagenet, decoder "
      f"{config.student.decoder_channels}; {hw[0]}x{hw[1]}, K={b.num_classes}, B={n_lab} "
      f"labelled + U={n_unl} unlabelled; method lix: controller {cfg['controller']} "
      f"(kappa {cfg['kappa']}, gamma {cfg['class_balance']}), alpha {cfg['alpha']}, beta "
      f"{cfg['beta']}, tau {cfg['temperature']}, lambda_l {cfg['lambda_l']}, lambda_f "
      f"{cfg['lambda_f']}, lambda_u {cfg['lambda_unlabeled']}, lambda_kr {cfg['lambda_kr']}, "
      f"CKA {cfg['kernel']} at {list(cfg['taps'])}; {config.optim.name} lr "
      f"{config.optim.learning_rate} wd {config.optim.weight_decay}")
  say(f"command: {' '.join(sys.argv)}; inductor cache: "
      f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR') or 'default (warm if run before)'}")
  say()

  # Correctness: one step of each on the same weights and batch, before any timing.
  dp = sharding.DataParallel(sharding.make_mesh(jax.devices()[:1]))
  first = {}  # seconds of each entry's first call (compiles included)

  def first_call(name, fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first[name] = time.perf_counter() - t0
    return out

  jax_step = b.distill_stepper(dp, batch)
  jax_metrics = jax.device_get(first_call("lix_jax (jit)", jax_step)[1])
  teacher, student = build_torch(b)
  eager = TorchStep(copy.deepcopy(student), copy.deepcopy(teacher), batch, cfg, config.optim, False)
  total, terms = first_call("torch eager", eager)
  rows = ["| step | term | lix_jax | torch | rel. diff | |", "|---|---|---|---|---|---|"]
  ok = compare(rows, "torch eager", jax_metrics, total, terms, eager.grad_norm(), args.tol)
  entries = [("lix_jax (jit)", jax_step), ("torch eager", eager)]
  if not args.no_compile:
    compiled = TorchStep(copy.deepcopy(student), copy.deepcopy(teacher), batch, cfg, config.optim,
                         True)
    total, terms = first_call("torch.compile", compiled)
    ok &= compare(rows, "torch.compile", jax_metrics, total, terms, compiled.grad_norm(), args.tol)
    entries.append(("torch.compile", compiled))
    counters = torch._dynamo.utils.counters  # pylint: disable=protected-access
    say(f"torch.compile: {counters['stats']['unique_graphs']} graph(s), "
        f"{sum(counters['graph_break'].values())} graph break(s) "
        f"{dict(counters['graph_break']) or ''}")
    say()
  say(f"### Same weights, same batch, first step: loss terms and global gradient norm "
      f"(tolerance {args.tol:g} relative): {'ALL AGREE' if ok else 'DISAGREE'}")
  say()
  for row in rows:
    say(row)
  say()

  timer = Rounds(args.warmup)
  for name, fn in entries:
    timer.add(name, fn, n_lab + n_unl)
  if args.one_thread:
    one = TorchStep(copy.deepcopy(student), copy.deepcopy(teacher), batch, cfg, config.optim, False)
    timer.add("torch eager, 1 thread (diagnostic)", Threads(one, 1), n_lab + n_unl)
    first["torch eager, 1 thread (diagnostic)"] = timer.first["torch eager, 1 thread (diagnostic)"]
  timer.run(args.rounds)
  ref = timer.ms["lix_jax (jit)"]
  say(f"### Step time: median of {args.rounds} interleaved rounds after {args.warmup} warm-up "
      f"calls; load avg at the end {os.getloadavg()[0]:.2f} (this benchmark's own threads count)")
  say()
  say("| step | median ms [min-max] | images/s | first call s (compile) | ratio to lix_jax, "
      "median per round [min-max] |")
  say("|---|---|---|---|---|")
  for name in timer.fns:
    ms = timer.ms[name]
    ratios = [a / r for a, r in zip(ms, ref)]
    say(f"| {name} | {timer.median(name):.0f} [{min(ms):.0f}-{max(ms):.0f}] | "
        f"{1e3 * timer.images[name] / timer.median(name):.1f} | {first[name]:.1f} | "
        f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] |")
  say()
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a" if args.append else "w") as f:
      f.write(("\n" if args.append else "") + "\n".join(lines) + "\n")
    print(f"written to {args.out}")
  if not ok:
    sys.exit(1)


if __name__ == "__main__":
  main()
