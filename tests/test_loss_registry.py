"""Method registry and `distill_losses` (DESIGN §2.5): names, errors, equality with direct calls."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lix_jax import losses
from lix_jax.config import base_config
from lix_jax.losses import feature
from lix_jax.losses import logit
from lix_jax.losses import registry

IGN = 255
# The contract of the brief: method -> (logit loss, feature loss).
EXPECTED = {
    "none": (None, None), "kd": ("kd", None), "dkd": ("dkd", None), "dwld": ("dwld", None),
    "cwd": ("cwd", None), "fitnet": (None, "fitnet"), "at": (None, "at"), "arfd": (None, "arfd"),
    "lix": ("dwld", "arfd"), "pseudo_label": ("pseudo_label", None), "kr_only": (None, "kr"),
    "cka_only": (None, "cka"),
}
TAPS = ["stage3", "decoder"]
TAP_WEIGHTS = [0.5, 2.0]
# Every `distill` key at its default (lix_jax.config, the one place), then this test's values.
DISTILL_DEFAULTS = base_config().distill.to_dict()
CFG = dict(DISTILL_DEFAULTS, alpha=0.8, beta=1.2, temperature=2.0, controller="dynamic", kappa=-1.5,
           pl_threshold=0.3, sigma=0.7, mix=0.4, lambda_kr=1.5, lambda_cka=0.6, kernel="linear",
           stride=1, cka_max_pixels=64, at_p=2, taps=TAPS, tap_weights=TAP_WEIGHTS)


def make_inputs(seed=0, b=2, ignore_frac=0.25):
  rng = np.random.default_rng(seed)
  k, c = 5, 6
  labels = rng.integers(0, k, size=(b, 8, 8))
  labels[rng.random(labels.shape) < ignore_frac] = IGN
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return dict(
      student_logits=f(b, 8, 8, k) * 2, teacher_logits=f(b, 8, 8, k) * 3,
      labels=jnp.asarray(labels, jnp.int32),
      student_feats={"stage3": f(b, 4, 4, c), "decoder": f(b, 8, 8, c)},
      teacher_feats={"stage3": f(b, 4, 4, c), "decoder": f(b, 8, 8, c)})


INPUTS = make_inputs()


def direct_logit(name, x, cfg):
  s, t, y = x["student_logits"], x["teacher_logits"], x["labels"]
  return {
      "kd": lambda: logit.kd_loss(s, t, y, temperature=cfg["temperature"]),
      "dkd": lambda: logit.dkd_loss(s, t, y, alpha=cfg["alpha"], beta=cfg["beta"],
                                    temperature=cfg["temperature"]),
      "dwld": lambda: logit.dwld_loss(s, t, y, alpha=cfg["alpha"], beta=cfg["beta"],
                                      temperature=cfg["temperature"],
                                      controller=cfg["controller"], kappa=cfg["kappa"],
                                      class_balance=cfg["class_balance"])[0],
      "cwd": lambda: feature.cwd_loss(s, t, temperature=cfg["temperature"], valid_mask=y != IGN),
      "pseudo_label": lambda: logit.pseudo_label_loss(s, t, y, threshold=cfg["pl_threshold"]),
  }[name]()


def direct_feature(name, s, t, cfg, valid_mask):
  arfd = lambda **kw: feature.arfd_loss(
      s, t, sigma=cfg["sigma"], mix=cfg["mix"], kernel=cfg["kernel"], stride=cfg["stride"],
      cka_max_pixels=cfg["cka_max_pixels"], valid_mask=valid_mask, **kw)[0]
  return {
      "fitnet": lambda: feature.fitnet_loss(s, t, valid_mask=valid_mask),
      "at": lambda: feature.at_loss(s, t, p=cfg["at_p"], valid_mask=valid_mask),
      "arfd": lambda: arfd(lambda_kr=cfg["lambda_kr"], lambda_cka=cfg["lambda_cka"]),
      "kr": lambda: arfd(lambda_kr=cfg["lambda_kr"], lambda_cka=0.0),
      "cka": lambda: arfd(lambda_kr=0.0, lambda_cka=cfg["lambda_cka"]),
  }[name]()


def test_every_method_resolves():
  assert set(losses.METHODS) == set(EXPECTED)
  for name, (logit_name, feature_name) in EXPECTED.items():
    m = losses.get_method(name)
    assert (m.logit, m.feature) == (logit_name, feature_name), name
    assert logit_name is None or logit_name in losses.LOGIT_LOSSES
    assert feature_name is None or feature_name in losses.FEATURE_LOSSES
    # Adapters exactly where a feature loss compares features channel by channel.
    assert m.uses_adapters == (feature_name in ("fitnet", "arfd", "kr", "cka")), name
  with pytest.raises(dataclasses.FrozenInstanceError):
    losses.get_method("lix").logit = "kd"


def test_unknown_names_raise_key_error_listing_valid_names():
  with pytest.raises(KeyError, match=r"'bogus'.*'arfd'.*'lix'.*'pseudo_label'"):
    losses.get_method("bogus")
  with pytest.raises(KeyError, match=r"'nope'.*'dynamic'.*'fixed'.*'trust'"):
    losses.distill_losses("dwld", **INPUTS, cfg=dict(CFG, controller="nope"))
  with pytest.raises(KeyError, match=r"'stage2'.*'decoder'.*'stage3'"):
    losses.distill_losses("arfd", **INPUTS, cfg=dict(CFG, taps=["stage3", "stage2"]))
  x = dict(INPUTS, teacher_feats={"decoder": INPUTS["teacher_feats"]["decoder"]})
  with pytest.raises(KeyError, match=r"'stage3'.*teacher_feats"):
    losses.distill_losses("fitnet", **x, cfg=CFG)
  with pytest.raises(KeyError, match="taps"):
    losses.distill_losses("lix", **INPUTS, cfg=dict(CFG, taps=[]))
  with pytest.raises(ValueError, match="tap_weights"):
    losses.distill_losses("at", **INPUTS, cfg=dict(CFG, tap_weights=[1.0]))


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_distill_losses_equal_direct_calls(method):
  valid_mask = INPUTS["labels"] != IGN
  terms, aux = losses.distill_losses(method, **INPUTS, cfg=CFG, valid_mask=valid_mask)
  m = losses.get_method(method)
  assert set(terms) == {"logit", "feature"}
  for key in terms:
    assert terms[key].shape == () and np.isfinite(float(terms[key])), (method, key)
  if m.logit is None:
    assert float(terms["logit"]) == 0.0
  else:
    expected = float(direct_logit(m.logit, INPUTS, CFG))
    assert expected > 0
    np.testing.assert_allclose(terms["logit"], expected, rtol=1e-6)
  if m.feature is None:
    assert float(terms["feature"]) == 0.0
  else:
    per_tap = [float(direct_feature(m.feature, INPUTS["student_feats"][tap],
                                    INPUTS["teacher_feats"][tap], CFG, valid_mask))
               for tap in TAPS]
    assert min(per_tap) > 0
    np.testing.assert_allclose(terms["feature"], np.dot(TAP_WEIGHTS, per_tap), rtol=1e-6)
    for tap, value in zip(TAPS, per_tap):
      np.testing.assert_allclose(aux[f"{m.feature}/{tap}/loss"], value, rtol=1e-6)
  if m.feature in ("arfd", "kr", "cka"):
    # The ablations pin the other ARFD part to 0: KR-only = λ_KR·L_KR, CKA-only = λ_CKA·L_CKA.
    # feature.arfd_loss leaves a skipped term's aux keys out.
    for tap in TAPS:
      prefix = f"{m.feature}/{tap}/"
      kr = CFG["lambda_kr"] * float(aux.get(prefix + "kr", 0.0))
      cka = CFG["lambda_cka"] * float(aux.get(prefix + "cka_loss", 0.0))
      assert (prefix + "kr" in aux) == (m.feature != "cka")
      assert (prefix + "cka_loss" in aux) == (m.feature != "kr")
      assert kr > 0 or cka > 0
      want = {"arfd": kr + cka, "kr": kr, "cka": cka}[m.feature]
      np.testing.assert_allclose(aux[prefix + "loss"], want, rtol=1e-5)
  if m.logit == "dwld":
    b, h, w = INPUTS["labels"].shape
    assert aux["dwld/w_t"].shape == (b, h, w) and aux["dwld/w_n"].shape == (b, h, w)
    np.testing.assert_allclose(np.asarray(aux["dwld/w_t"])[np.asarray(valid_mask)].mean(),
                               CFG["alpha"], rtol=1e-5)
  if method == "lix":
    assert {"arfd/stage3/cka", "arfd/decoder/kr", "dwld/tcld", "dwld/ncld"} <= set(aux)


def test_config_dict_and_defaults():
  cfg = ml_collections.ConfigDict(CFG)
  terms_cd, _ = losses.distill_losses("lix", **INPUTS, cfg=cfg)
  terms_d, _ = losses.distill_losses("lix", **INPUTS, cfg=CFG)
  for key in terms_d:
    np.testing.assert_allclose(terms_cd[key], terms_d[key], rtol=1e-7)
  # The defaults live in the config alone: the builder reads every key, a missing one is an error
  # naming it (no second defaults table in the registry).
  assert not hasattr(registry, "DEFAULTS")
  with pytest.raises(KeyError, match=r"distill\.kappa"):
    losses.make_distill_loss("lix", {k: v for k, v in CFG.items() if k != "kappa"})
  d = dict(DISTILL_DEFAULTS, taps=["decoder"], tap_weights=[1.0])
  built = losses.make_distill_loss("lix", d)
  assert (built.lambda_l, built.lambda_f, built.taps) == (d["lambda_l"], d["lambda_f"], ("decoder",))
  terms, _ = built.terms(**INPUTS)
  np.testing.assert_allclose(terms["logit"], direct_logit("dwld", INPUTS, d), rtol=1e-6)
  np.testing.assert_allclose(
      terms["feature"],
      direct_feature("arfd", INPUTS["student_feats"]["decoder"],
                     INPUTS["teacher_feats"]["decoder"], d, None), rtol=1e-6)
  # cwd_temperature, when set, overrides temperature for CWD only.
  terms, _ = losses.distill_losses("cwd", **INPUTS, cfg=dict(CFG, cwd_temperature=4.0))
  np.testing.assert_allclose(terms["logit"],
                             direct_logit("cwd", INPUTS, dict(CFG, temperature=4.0)), rtol=1e-6)


def test_gradients_flow_to_student_only():
  def loss(s_logits, s_feats, t_logits):
    x = dict(INPUTS, student_logits=s_logits, student_feats=s_feats, teacher_logits=t_logits)
    terms, _ = losses.distill_losses("lix", **x, cfg=CFG)
    return terms["logit"] + terms["feature"]

  g_s, g_f, g_t = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
      INPUTS["student_logits"], INPUTS["student_feats"], INPUTS["teacher_logits"])
  assert np.all(np.isfinite(g_s)) and np.any(np.asarray(g_s))
  for tap in TAPS:
    assert np.all(np.isfinite(g_f[tap])) and np.any(np.asarray(g_f[tap]))
  assert not np.any(np.asarray(g_t))


def test_sharded_lix_equals_single_device():
  """8 devices, one image each, different valid counts (one image fully ignored)."""
  x = make_inputs(seed=1, b=8, ignore_frac=0.0)
  labels = np.array(x["labels"])
  for i in range(8):
    labels[i].reshape(-1)[:7 * i] = IGN
  labels[5] = IGN
  x["labels"] = jnp.asarray(labels)
  valid_mask = x["labels"] != IGN
  mesh = Mesh(np.array(jax.devices()), ("data",))

  def run(x, valid_mask, axis_name):
    terms, _ = losses.distill_losses("lix", **x, cfg=CFG, valid_mask=valid_mask,
                                     axis_name=axis_name)
    return terms

  sharded = jax.jit(jax.shard_map(lambda x, v: run(x, v, "data"), mesh=mesh,
                                  in_specs=(P("data"), P("data")), out_specs=P(),
                                  check_vma=False))
  out = sharded(x, valid_mask)
  single = jax.jit(lambda x, v: run(x, v, None))(x, valid_mask)
  for key in ("logit", "feature"):
    assert float(single[key]) > 0
    np.testing.assert_allclose(out[key], single[key], rtol=1e-5)
