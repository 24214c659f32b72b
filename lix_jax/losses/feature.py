"""Feature distillation losses: ARFD (KR + CKA), FitNet, CWD and attention transfer (DESIGN §2.4).

Conventions. Features are `[B, h, w, C]` (any float dtype; computed in at least float32); student
features are already mapped to the teacher's width by the adapter (AT alone allows different C).
Teacher features enter through `lax.stop_gradient`. `valid_mask` is `[B, H', W']` bool at any
resolution, resized inside to `(h, w)` by nearest neighbour with half-pixel centres (source index
`floor((i + 0.5) * H' / h)`); None means every pixel is valid. Masked pixels are excluded exactly:
a loss equals the same loss computed on the valid pixels alone.

Every mean is global (DESIGN §1): a sum and a count, each `lax.psum`-ed over `axis_name` when one
is given, then divided (0 when the count is 0). Pixel means count valid pixels; image means count
images that have enough valid pixels for the quantity to exist (>= 1, or >= 2 for CKA).

Memory is linear in the number of pixels: kernel regression streams over blocks
(`kernels.kernel_regression`), linear CKA works in feature space, and Gram-form CKA is built over
at most `cka_max_pixels` pixels per image.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lix_jax import kernels

Array = jax.Array


def _f32(x: Array) -> Array:
  return x.astype(jnp.result_type(jnp.float32, x.dtype))


def _psum(x: Array, axis_name: str | None) -> Array:
  return x if axis_name is None else lax.psum(x, axis_name)


def _global_mean(total: Array, count: Array, axis_name: str | None) -> Array:
  """psum(total) / psum(count), or 0 when the global count is 0."""
  total, count = _psum(total, axis_name), _psum(count, axis_name)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _check_same(s: Array, t: Array, name: str, channels: bool = True) -> None:
  n = 4 if channels else 3
  if s.ndim != 4 or t.ndim != 4 or s.shape[:n] != t.shape[:n]:
    what = "shapes" if channels else "[B, h, w]"
    raise ValueError(f"{name}: student and teacher features must be [B, h, w, C] with equal "
                     f"{what}; got student {s.shape}, teacher {t.shape}")


def resize_mask(valid_mask: Array | None, shape: tuple[int, int, int]) -> Array:
  """Nearest-neighbour resize of a `[B, H', W']` mask to `shape = (B, h, w)`; None -> all True."""
  b, h, w = shape
  if valid_mask is None:
    return jnp.ones(shape, bool)
  if valid_mask.ndim != 3 or valid_mask.shape[0] != b:
    raise ValueError(f"valid_mask must be [B={b}, H', W'], got shape {valid_mask.shape}")
  hh, ww = valid_mask.shape[1:]
  rows = np.minimum(np.floor((np.arange(h) + 0.5) * hh / h).astype(np.int32), hh - 1)
  cols = np.minimum(np.floor((np.arange(w) + 0.5) * ww / w).astype(np.int32), ww - 1)
  return valid_mask.astype(bool)[:, rows][:, :, cols]


# The fused kernel's break-even on an H100 (docs/performance.md, "DWLD + ARFD"): it halves ARFD
# at the decoder tap (12 288 queries x 3 072 keys per image) and is slower than XLA at stage 3
# (768 x 192), where its launch and tile padding dominate.
PALLAS_MIN_PAIRS = 1 << 20
KR_IMPLS = ("auto", "pallas", "xla")


def resolve_kr_impl(impl: str, sigma, num_queries: int, num_keys: int,
                    backend: str | None = None) -> str:
  """The kernel-regression implementation `impl` stands for: "auto" is "pallas" on GPUs for a
  Python sigma >= `kernels.MIN_BOUNDED_SIGMA` and at least `PALLAS_MIN_PAIRS` query-key pairs per
  image, else "xla" (CPUs, TPUs -- where the Mosaic lowering is untimed -- traced sigmas, small
  taps). backend: None = JAX's default backend."""
  if impl not in KR_IMPLS:
    raise KeyError(f"Unknown kernel-regression impl {impl!r}; valid: {list(KR_IMPLS)}")
  if impl != "auto":
    return impl
  bounded = isinstance(sigma, (int, float)) and sigma >= kernels.MIN_BOUNDED_SIGMA
  large = num_queries * num_keys >= PALLAS_MIN_PAIRS
  on_gpu = (backend or jax.default_backend()) == "gpu"
  return "pallas" if on_gpu and bounded and large else "xla"


def kr_recalibrate(student_feats: Array, teacher_feats: Array, *, sigma: float, mix: float,
                   stride: int = 2, valid_mask: Array | None = None,
                   block_size: int = 256, impl: str = "auto") -> Array:
  """Recalibrated teacher target T~ = (1 - mix) T + mix R (§2.4), per image.

  R_i = kernel_regression(queries=A_i, keys=T_j, values=T_j) with the Laplace kernel on
  unit-normalised features; keys are every `stride`-th pixel in each spatial dimension that is
  valid. An image with no valid key keeps R = T (no recalibration).

  Args:
    student_feats: `[B, h, w, C]` adapter outputs A. teacher_feats: `[B, h, w, C]` T.
    sigma: Laplace bandwidth. mix: mu in [0, 1]; a Python 0 returns T without any regression.
    stride: key subsampling stride (default: `distill.stride`'s).
    valid_mask: `[B, H', W']` bool or None.
    block_size: kernel-regression block size (queries and keys per block). 256 keeps the blocks
      in cache on CPU and wastes little padding at the taps' sizes (4x faster than 1024 at 768 px).
    impl: "xla" (`kernels.kernel_regression`, blocked), "pallas" (`kr_fused`, one fused kernel
      per query block for GPUs; needs a Python sigma >= kernels.MIN_BOUNDED_SIGMA) or "auto"
      (`resolve_kr_impl`: pallas for large taps on GPUs, else xla).
  Returns:
    `[B, h, w, C]` float32 target (the teacher enters through stop_gradient; A does not).

  Example: `jax.vmap` is applied inside; call on the whole batch.
  """
  _check_same(student_feats, teacher_feats, "kr_recalibrate")
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  a, t = _f32(student_feats), lax.stop_gradient(_f32(teacher_feats))
  if isinstance(mix, (int, float)) and mix == 0:
    return t
  b, h, w, c = t.shape
  m = resize_mask(valid_mask, (b, h, w))
  keys = t[:, ::stride, ::stride].reshape(b, -1, c)
  kmask = m[:, ::stride, ::stride].reshape(b, -1)
  impl = resolve_kr_impl(impl, sigma, h * w, kmask.shape[1])
  if impl == "pallas":
    from lix_jax import kr_fused  # noqa: PLC0415 (Pallas is imported only when asked for)
    r = kr_fused.kernel_regression_fused(a.reshape(b, -1, c), keys, keys, sigma=sigma,
                                         key_mask=kmask)
  else:
    kr = functools.partial(kernels.kernel_regression, sigma=sigma, block_size=block_size)
    r = jax.vmap(lambda q, k, km: kr(q, k, k, key_mask=km))(a.reshape(b, -1, c), keys, kmask)
  r = jnp.where(jnp.any(kmask, -1)[:, None, None], r, t.reshape(b, -1, c)).reshape(t.shape)
  return (1.0 - mix) * t + mix * r


def _sq_err_mean(a: Array, target: Array, m: Array, axis_name: str | None) -> Array:
  """Global mean over valid pixels of ||a - target||^2 / C."""
  err = jnp.mean(jnp.square(a - target), -1)
  return _global_mean(jnp.sum(jnp.where(m, err, 0.0)), jnp.sum(m.astype(jnp.float32)), axis_name)


def _subsample_stride(h: int, w: int, max_pixels: int) -> int:
  """Smallest spatial stride s with ceil(h/s) * ceil(w/s) <= max_pixels."""
  if max_pixels < 1:
    raise ValueError(f"cka_max_pixels must be >= 1, got {max_pixels}")
  s = 1
  while math.ceil(h / s) * math.ceil(w / s) > max_pixels:
    s += 1
  return s


_CKA_KERNELS = ("linear", "rbf", "laplace")


def _rbf_bandwidth(x: Array, wts: Array, sigma: float) -> Array:
  """sigma * RMS pairwise distance among weighted samples (= sigma * sqrt(2 * total variance))."""
  x = lax.stop_gradient(x)
  sw = jnp.maximum(jnp.sum(wts), 1.0)
  mu = jnp.sum(wts[:, None] * x, 0) / sw
  var = jnp.sum(wts[:, None] * jnp.square(x - mu)) / sw
  # Floor relative to the features' own scale so constant features give a finite kernel.
  floor = 1e-6 * jnp.sum(wts[:, None] * jnp.square(x)) / sw + 1e-12
  return sigma * jnp.sqrt(2.0 * jnp.maximum(var, floor))


def _per_image_cka(a: Array, t: Array, m: Array, kernel: str, sigma: float,
                   cka_max_pixels: int) -> tuple[Array, Array]:
  """CKA per image `[B]` and the per-image validity (>= 2 valid samples) `[B]`."""
  b, h, w, _ = a.shape
  if kernel == "linear":
    x, z, wts = a.reshape(b, h * w, -1), t.reshape(b, h * w, -1), m.reshape(b, -1)
    fn = lambda x, z, wt: kernels.linear_cka(x, z, weights=wt)
  else:
    s = _subsample_stride(h, w, cka_max_pixels)
    sub = lambda f: f[:, ::s, ::s].reshape(b, -1, f.shape[-1])
    x, z, wts = sub(a), sub(t), m[:, ::s, ::s].reshape(b, -1)
    if kernel == "laplace":
      fn = lambda x, z, wt: kernels.cka(x, z, "laplace", weights=wt, sigma=sigma)
    else:
      def fn(x, z, wt):
        wf = wt.astype(jnp.float32)
        kx = kernels.rbf_kernel(x, x, _rbf_bandwidth(x, wf, sigma))
        kz = kernels.rbf_kernel(z, z, _rbf_bandwidth(z, wf, sigma))
        return _gram_cka(kx, kz, wt)
  wts = wts.astype(jnp.float32)
  return jax.vmap(fn)(x, z, wts), jnp.sum(wts, -1) >= 2


def _gram_cka(k: Array, l: Array, wt: Array) -> Array:
  """Biased CKA from two Grams with a 0/1 sample mask (same degeneracy rule as `kernels.cka`)."""
  h = lambda p, q: kernels.hsic(p, q, weights=wt)
  ww = wt[:, None] * wt[None, :]
  norm = 1.0 / jnp.maximum(jnp.sum(wt) - 1.0, 1.0) ** 2
  hkk, hll = h(k, k), h(l, l)
  rtol = kernels.DEGENERATE_RTOL
  ok = (hkk > rtol * norm * jnp.sum(k * k * ww)) & (hll > rtol * norm * jnp.sum(l * l * ww))
  return jnp.where(ok, h(k, l) / jnp.sqrt(jnp.where(ok, hkk * hll, 1.0)), 0.0)


def arfd_loss(student_feats: Array, teacher_feats: Array, *, sigma: float = 1.0,
              mix: float = 0.5, lambda_kr: float = 0.0, lambda_cka: float = 1.0,
              kernel: str = "linear", stride: int = 2, cka_max_pixels: int = 1024,
              valid_mask: Array | None = None, axis_name: str | None = None,
              block_size: int = 256, kr_impl: str = "auto") -> tuple[Array, dict[str, Array]]:
  """ARFD at one tap: lambda_kr * L_KR + lambda_cka * L_CKA (§2.4).

  L_KR = mean over (images, valid pixels) of ||A_i - sg(T~_i)||^2 / C, T~ from `kr_recalibrate`.
  L_CKA = mean over images of (1 - CKA(A, T)) over each image's valid pixels; images with fewer
  than 2 valid pixels are not counted. Kernels: "linear" uses feature-space `linear_cka` on every
  valid pixel (exact, any size); "laplace" (unit-normalised features, bandwidth `sigma`, as the KR
  kernel) and "rbf" (bandwidth `sigma` times the RMS pairwise distance of the image's valid
  features, computed separately for A and T -- a scale-free mean heuristic) build Grams over a
  strided subsample: spatial stride s, the smallest with ceil(h/s) * ceil(w/s) <= cka_max_pixels.
  Every hyper-parameter's default is `lix_jax/config.py`'s `distill.*` value (DESIGN §3).

  Args:
    student_feats: `[B, h, w, C]` adapter outputs. teacher_feats: `[B, h, w, C]`.
    sigma, mix, stride, block_size: kernel-regression parameters (see `kr_recalibrate`).
    kr_impl: "auto" | "xla" | "pallas", `kr_recalibrate`'s `impl`.
    lambda_kr, lambda_cka: term weights; a Python 0 skips that term entirely (the default
      lambda_kr = 0 is the config's: kernel regression is one argument away, DESIGN §2.4).
    kernel: CKA kernel, "linear" | "rbf" | "laplace". cka_max_pixels: Gram-size bound.
    valid_mask: `[B, H', W']` bool or None. axis_name: data axis for global means, or None.
  Returns:
    `(loss, aux)`; aux has "kr" (L_KR) if computed, "cka_loss" (L_CKA) and "cka" (mean CKA over
    counted images) if computed -- a skipped term's keys are absent rather than a misleading 0.
  """
  _check_same(student_feats, teacher_feats, "arfd_loss")
  if kernel not in _CKA_KERNELS:
    raise KeyError(f"Unknown ARFD kernel {kernel!r}; valid kernels are: {list(_CKA_KERNELS)}")
  a, t = _f32(student_feats), lax.stop_gradient(_f32(teacher_feats))
  b, h, w, _ = a.shape
  m = resize_mask(valid_mask, (b, h, w))
  skip = lambda lam: isinstance(lam, (int, float)) and lam == 0
  loss, aux = jnp.zeros((), a.dtype), {}
  if not skip(lambda_kr):
    # The target is a constant: no gradient flows into the regression (and none is traced).
    target = lax.stop_gradient(kr_recalibrate(lax.stop_gradient(a), t, sigma=sigma, mix=mix,
                                              stride=stride, valid_mask=m,
                                              block_size=block_size, impl=kr_impl))
    aux["kr"] = _sq_err_mean(a, target, m, axis_name)
    loss = loss + lambda_kr * aux["kr"]
  if not skip(lambda_cka):
    per_image, counted = _per_image_cka(a, t, m, kernel, sigma, cka_max_pixels)
    cnt = jnp.sum(counted.astype(a.dtype))
    aux["cka_loss"] = _global_mean(jnp.sum(jnp.where(counted, 1.0 - per_image, 0.0)), cnt,
                                   axis_name)
    aux["cka"] = _global_mean(jnp.sum(jnp.where(counted, per_image, 0.0)), cnt, axis_name)
    loss = loss + lambda_cka * aux["cka_loss"]
  return loss, aux


def fitnet_loss(student_feats: Array, teacher_feats: Array, *, valid_mask: Array | None = None,
                axis_name: str | None = None) -> Array:
  """FitNet hint loss: mean over valid pixels of ||A - T||^2 / C (ARFD's KR term at mix = 0)."""
  _check_same(student_feats, teacher_feats, "fitnet_loss")
  a, t = _f32(student_feats), lax.stop_gradient(_f32(teacher_feats))
  return _sq_err_mean(a, t, resize_mask(valid_mask, a.shape[:3]), axis_name)


def _masked_log_softmax(z: Array, m: Array) -> Array:
  """log_softmax of `z [P, C]` over axis 0 restricted to rows where `m [P]`; finite elsewhere."""
  mm = m[:, None]
  zmax = lax.stop_gradient(jnp.max(jnp.where(mm, z, -jnp.inf), 0))
  zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)  # no valid pixel
  sumexp = jnp.sum(jnp.where(mm, jnp.exp(z - zmax), 0.0), 0)
  return z - zmax - jnp.log(jnp.maximum(sumexp, jnp.finfo(z.dtype).tiny))


def cwd_loss(student_feats: Array, teacher_feats: Array, *, temperature: float,
             valid_mask: Array | None = None, axis_name: str | None = None) -> Array:
  """Channel-wise distillation (Shu et al., ICCV 2021); features or logits `[B, h, w, C]`.

  For each image and channel, softmax over the image's valid pixels at temperature tau of the
  teacher (p) and student (q) maps; tau^2 * KL(p || q) from log_softmax; mean over (images with a
  valid pixel) x channels. `temperature` has no default: the config's CWD temperature is
  `distill.cwd_temperature`, or `distill.temperature` when that is 0.
  """
  _check_same(student_feats, teacher_feats, "cwd_loss")
  s, t = _f32(student_feats), lax.stop_gradient(_f32(teacher_feats))
  b, h, w, c = s.shape
  m = resize_mask(valid_mask, (b, h, w)).reshape(b, h * w)

  def per_image(si, ti, mi):
    lq = _masked_log_softmax(si / temperature, mi)
    lp = _masked_log_softmax(ti / temperature, mi)
    return jnp.sum(jnp.where(mi[:, None], jnp.exp(lp) * (lp - lq), 0.0))

  kl = jax.vmap(per_image)(s.reshape(b, h * w, c), t.reshape(b, h * w, c), m)
  has = jnp.any(m, -1)
  total = temperature ** 2 * jnp.sum(jnp.where(has, kl, 0.0))
  return _global_mean(total, c * jnp.sum(has.astype(s.dtype)), axis_name)


def at_loss(student_feats: Array, teacher_feats: Array, *, p: float = 2,
            valid_mask: Array | None = None, axis_name: str | None = None) -> Array:
  """Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

  a = mean_c |F|^p (p >= 1) per pixel, zeroed at masked pixels, flattened and L2-normalised per
  image (a / max(||a||_2, 1e-6)); loss = mean over images with a valid pixel of the *squared*
  distance ||a_s - a_t||_2^2 (summed over pixels). Student and teacher may differ in C.
  """
  _check_same(student_feats, teacher_feats, "at_loss", channels=False)
  s, t = _f32(student_feats), lax.stop_gradient(_f32(teacher_feats))
  b, h, w, _ = s.shape
  m = resize_mask(valid_mask, (b, h, w)).reshape(b, -1)

  def attention(f):
    a = jnp.where(m, jnp.mean(jnp.abs(f) ** p, -1).reshape(b, -1), 0.0)
    return a / jnp.sqrt(jnp.maximum(jnp.sum(a * a, -1, keepdims=True), 1e-12))

  d = jnp.sum(jnp.square(attention(s) - attention(t)), -1)
  has = jnp.any(m, -1)
  return _global_mean(jnp.sum(jnp.where(has, d, 0.0)), jnp.sum(has.astype(s.dtype)), axis_name)
