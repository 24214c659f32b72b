"""Tests of lix_jax.data.pipeline on fake in-memory sources with recognisable patterns."""
from __future__ import annotations


import jax
import numpy as np
import pytest

from lix_jax.data import pipeline

H, W = 20, 48
MEAN, STD = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)


def coord_example(i: int, label_axis: str = "col", holes: np.ndarray | None = None) -> dict:
  """image = (4·col, 4·row, 0); depth = 1 + row + col/64 (0 on holes); label = col or row."""
  row, col = np.mgrid[:H, :W]
  image = np.stack([4 * col, 4 * row, np.full_like(col, i)], -1).astype(np.uint8)
  depth = (1 + row + col / 64).astype(np.float32)
  if holes is not None:
    depth = np.where(holes, 0, depth).astype(np.float32)
  label = (col if label_axis == "col" else row).astype(np.uint8)
  return {"image": image, "depth": depth, "label": label,
          "intrinsics": np.array([50, 50, W / 2, H / 2], np.float32),
          "baseline": np.float32(0.5), "id": f"ex{i}".encode()}


def id_source(n: int) -> list[dict]:
  """Examples whose label is the example index everywhere (and depth = index + 1)."""
  out = []
  for i in range(n):
    ex = coord_example(i)
    ex["label"] = np.full((H, W), i, np.uint8)
    out.append(ex)
  return out


def take(it, k):
  return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def train(source, seed=0, **kw):
  args = dict(batch_size=2, seed=seed, x_modality="depth", crop_hw=(16, 32), shard_index=0,
              shard_count=1, mean=MEAN, std=STD)
  args.update(kw)
  return pipeline.train_dataset(source, **args)


def test_deterministic_given_seed_and_seeds_differ():
  src = [coord_example(i) for i in range(6)]
  a, b, c = (take(iter(train(src, seed=s, num_threads=t)), 4) for s, t in ((3, 2), (3, 0), (4, 2)))
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))
  assert a[0]["image"].shape == (2, 16, 32, 3) and a[0]["image"].dtype == np.float32
  assert a[0]["x"].shape == (2, 16, 32, 1) and a[0]["label"].dtype == np.int32


@pytest.mark.parametrize("thread_prefetch", [0, 2])
def test_resume_from_state_gives_identical_batches(thread_prefetch):
  src = [coord_example(i) for i in range(5)]
  full = take(iter(train(src, seed=1, thread_prefetch=thread_prefetch)), 6)
  it = iter(train(src, seed=1, thread_prefetch=thread_prefetch))
  take(it, 2)
  state = it.get_state()
  del it
  it2 = iter(train(src, seed=1, thread_prefetch=thread_prefetch))
  it2.set_state(state)
  for x, y in zip(take(it2, 4), full[2:]):
    assert_batches_equal(x, y)


def test_worker_processes_give_the_in_process_stream_and_resume_exactly():
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain's workers read an absl flag (app.run parses them in main).
  src = [coord_example(i) for i in range(5)]
  full = take(iter(train(src, seed=1)), 5)
  it = iter(train(src, seed=1, num_workers=2))
  first = take(it, 2)
  state = it.get_state()
  assert len(state["iterators_in_use_states"]) == 2  # one position per worker, not in-process
  del it
  it2 = iter(train(src, seed=1, num_workers=2))
  it2.set_state(state)
  for x, y in zip(first + take(it2, 3), full):
    assert_batches_equal(x, y)
  del it2
  with pytest.raises(ValueError, match="num_workers"):
    train(src, num_workers=-1)


def test_two_hosts_disjoint_cover_each_epoch_and_match_global_batch():
  n, b, hosts = 12, 2, 2
  src = id_source(n)
  kw = dict(seed=5, batch_size=b, crop_hw=(H, W), scale_range=(1.0, 1.0))
  steps = 2 * n // (hosts * b)  # two epochs
  per_host = [take(iter(train(src, shard_index=i, shard_count=hosts, **kw)), steps)
              for i in range(hosts)]
  ids = [[bt["label"][:, 0, 0] for bt in batches] for batches in per_host]
  epoch_steps = n // (hosts * b)
  for e in range(2):
    seen = [np.concatenate(h[e * epoch_steps:(e + 1) * epoch_steps]) for h in ids]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))
  # Host i's row r of step t is row i + hosts·r of a single host's global batch t.
  kw.update(batch_size=b * hosts)
  single = take(iter(train(src, shard_index=0, shard_count=1, **kw)), steps)
  for t in range(steps):
    for i in range(hosts):
      for key in ("image", "x", "label"):
        np.testing.assert_array_equal(per_host[i][t][key], single[t][key][i::hosts])


@pytest.mark.parametrize("label_axis", ["col", "row"])
def test_augmentation_keeps_image_x_and_label_aligned(label_axis):
  ex = coord_example(0, label_axis)
  x = pipeline.compute_x(ex, "depth")
  flips, scales = 0, []
  for seed in range(40):
    img, xo, xv, lab, inside = pipeline.augment(
        ex["image"], x, ex["label"], np.random.default_rng(seed), crop_hw=(16, 32),
        scale_range=(0.5, 2.0), flip_prob=0.5)
    src_col, src_row = img[..., 0] / 4, img[..., 1] / 4
    np.testing.assert_array_equal(lab == 255, ~inside)
    src = src_col if label_axis == "col" else src_row
    assert np.all(np.abs(lab - src)[inside] <= 0.5 + 1e-4)
    np.testing.assert_array_equal(xv, inside)  # no holes: valid exactly where inside
    np.testing.assert_allclose(xo[..., 0][xv], (1 + src_row + src_col / 64)[xv], atol=1e-3)
    row_in = inside.any(1)
    if row_in.any() and inside[row_in][0].sum() > 2:
      cols = src_col[row_in][0][inside[row_in][0]]
      flips += cols[-1] < cols[0]
      scales.append((len(cols) - 1) / max(abs(cols[-1] - cols[0]), 1e-6))
  assert 5 <= flips <= 35  # flip_prob 0.5 over 40 draws
  assert min(scales) < 0.9 and max(scales) > 1.3  # zoom factors spread over (0.5, 2)


def test_full_pipeline_alignment_after_normalisation():
  src = [coord_example(i) for i in range(4)]
  batch = next(iter(train(src, batch_size=4, crop_hw=(24, 56))))  # crop > image: padding
  img = batch["image"] * np.array(STD, np.float32) + np.array(MEAN, np.float32)
  lab = batch["label"]
  inside = lab != 255
  assert (~inside).any() and inside.any()
  assert np.all(np.abs(lab - img[..., 0] / 4)[inside] <= 0.5 + 1e-3)
  np.testing.assert_allclose(batch["image"][~inside], 0)
  np.testing.assert_allclose(batch["x"][..., 0][~inside], 0)


def test_invalid_depth_stays_invalid_after_resize():
  rng = np.random.default_rng(0)
  holes = rng.random((H, W)) < 0.3
  holes[5:12, 10:30] = True
  ex = coord_example(0, holes=holes)
  ex["depth"] = np.where(holes, 0, 7.0).astype(np.float32)
  x = pipeline.compute_x(ex, "depth")
  for seed in range(30):
    img, xo, xv, lab, inside = pipeline.augment(
        ex["image"], x, ex["label"], np.random.default_rng(seed), crop_hw=(16, 32),
        scale_range=(0.5, 2.0))
    vals = xo[..., 0]
    np.testing.assert_array_equal(vals != 0, xv)
    np.testing.assert_allclose(vals[xv], 7.0, rtol=1e-5)  # never blended with the zeros
    # Bilinear neighbours of each output pixel, decoded from the image pattern.
    sc, sr = img[..., 0] / 4, img[..., 1] / 4
    r0, c0 = np.floor(sr).astype(int), np.floor(sc).astype(int)
    r1, c1 = np.minimum(r0 + 1, H - 1), np.minimum(c0 + 1, W - 1)
    nb = np.stack([holes[r0, c0], holes[r0, c1], holes[r1, c0], holes[r1, c1]])
    assert not xv[inside & nb.all(0)].any()
    assert xv[inside & ~nb.any(0)].all()


def test_flip_negates_normal_x_component():
  pytest.importorskip("lix_jax.data.geometry")
  fx, h, w = 60.0, 24, 40
  n = np.array([0.6, 0.0, -1.0]) / np.linalg.norm([0.6, 0.0, -1.0])  # faces the camera
  v, u = np.mgrid[:h, :w]
  ray = np.stack([(u - w / 2) / fx, (v - h / 2) / fx, np.ones((h, w))], -1)
  depth = (-5.0 / (ray @ n)).astype(np.float32)  # plane n·P = -5
  ex = {"image": np.zeros((h, w, 3), np.uint8), "depth": depth,
        "label": np.zeros((h, w), np.uint8),
        "intrinsics": np.array([fx, fx, w / 2, h / 2], np.float32), "baseline": np.float32(0.5)}
  x = pipeline.compute_x(ex, "normal")
  kw = dict(crop_hw=(16, 32), scale_range=(0.8, 1.2), x_modality="normal")
  _, xa, va, _, _ = pipeline.augment(ex["image"], x, ex["label"], np.random.default_rng(1),
                                     flip_prob=0.0, **kw)
  _, xb, vb, _, _ = pipeline.augment(ex["image"], x, ex["label"], np.random.default_rng(1),
                                     flip_prob=1.0, **kw)
  np.testing.assert_array_equal(vb, va[:, ::-1])
  np.testing.assert_allclose(xb, xa[:, ::-1] * np.array([-1, 1, 1], np.float32), atol=1e-6)
  assert va.mean() > 0.5
  np.testing.assert_allclose(np.median(xa[va], 0), n, atol=0.03)
  np.testing.assert_allclose(np.median(xb[vb], 0), n * [-1, 1, 1], atol=0.03)
  np.testing.assert_allclose(np.linalg.norm(xb[vb], axis=-1), 1, atol=1e-5)


@pytest.mark.parametrize("n,b,hosts", [(5, 2, 1), (7, 2, 2)])
def test_eval_each_example_once_with_padding_masked(n, b, hosts):
  src = [coord_example(i) for i in range(n)]
  seen, padded = [], 0
  num = pipeline.num_eval_batches(n, b, hosts)
  for i in range(hosts):
    batches = list(iter(pipeline.eval_dataset(src, batch_size=b, x_modality="depth", mean=MEAN,
                                              std=STD, shard_index=i, shard_count=hosts)))
    assert len(batches) == num
    for bt in batches:
      assert bt["image"].shape == (b, H, W, 3) and bt["valid"].dtype == bool
      assert np.all(bt["label"][~bt["valid"]] == 255)
      padded += int((~bt["valid"]).sum())
      for row in np.flatnonzero(bt["valid"]):
        k = int(bt["id"][row].decode()[2:])
        seen.append(k)
        want = (src[k]["image"].astype(np.float32) - np.float32(MEAN)) / np.float32(STD)
        np.testing.assert_allclose(bt["image"][row], want, rtol=1e-6)
        np.testing.assert_array_equal(bt["label"][row], src[k]["label"])
  assert sorted(seen) == list(range(n))
  assert padded == num * b * hosts - n > 0


def test_eval_pad_hw():
  bt = next(iter(pipeline.eval_dataset([coord_example(0)], batch_size=1, x_modality="depth",
                                       pad_hw=(24, 50), shard_index=0, shard_count=1)))
  assert bt["image"].shape == (1, 24, 50, 3)
  assert np.all(bt["label"][0, H:] == 255) and np.all(bt["label"][0, :, W:] == 255)
  np.testing.assert_array_equal(bt["label"][0, :H, :W], coord_example(0)["label"])


def test_unlabeled_stream_never_reads_labels():
  src = [{k: v for k, v in coord_example(i).items() if k != "label"} for i in range(4)]
  batch = next(iter(pipeline.unlabeled_dataset(src, batch_size=2, seed=0, x_modality="depth",
                                               crop_hw=(16, 32), shard_index=0, shard_count=1)))
  assert np.all(batch["label"] == 255)
  assert np.abs(batch["image"]).sum() > 0
  with pytest.raises(KeyError):  # the labelled stream does read them
    next(iter(train(src)))


def test_bad_arguments():
  src = [coord_example(0)]
  with pytest.raises(KeyError, match="depth.*disparity.*normal"):
    train(src, x_modality="rgb")
  with pytest.raises(ValueError, match="shard_index"):
    train(src, shard_index=2, shard_count=2)
  bad = coord_example(0)
  bad["label"] = bad["label"][:-1]
  with pytest.raises(ValueError, match="ex0"):
    pipeline.process_example(bad, None, x_modality="depth")


def test_image_stats_and_to_global_batch():
  src = [coord_example(i) for i in range(3)]
  mean, std = pipeline.image_stats(src)
  pix = np.concatenate([s["image"].reshape(-1, 3) for s in src]).astype(np.float64)
  np.testing.assert_allclose(mean, pix.mean(0), rtol=1e-10)
  np.testing.assert_allclose(std, pix.std(0), rtol=1e-10)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  n = len(jax.devices())
  local = {"image": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
           "valid": np.ones(n, bool), "id": np.array([b"a"] * n)}
  from lix_jax.train import sharding  # noqa: PLC0415  (the trainer's; the data tests need no flax)
  out = sharding.to_global_batch(local, mesh)
  assert set(out) == {"image", "valid"}
  np.testing.assert_array_equal(np.asarray(out["image"]), local["image"])
  assert out["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(out["image"].addressable_shards) == n


@pytest.mark.parametrize("x_modality", ["disparity", "normal"])
def test_x_modalities_through_the_pipelines(x_modality):
  from lix_jax.data import geometry
  holes = np.zeros((H, W), bool)
  holes[3:6, 7:15] = True
  src = [coord_example(i, holes=holes) for i in range(2)]
  ev = next(iter(pipeline.eval_dataset(src, batch_size=2, x_modality=x_modality,
                                       shard_index=0, shard_count=1)))
  cx = 1 if x_modality == "disparity" else 3
  assert ev["x"].shape == (2, H, W, cx)
  assert np.all(ev["x"][:, holes] == 0)
  if x_modality == "disparity":
    depth = src[0]["depth"]
    disp = np.where(depth > 0, 50.0 * 0.5 / np.maximum(depth, 1e-9), 0)[..., None]  # fx·B/Z
    np.testing.assert_allclose(ev["x"][0], geometry.normalize_x(disp, "disparity"), rtol=1e-5)
  tr = next(iter(train(src, x_modality=x_modality)))
  assert tr["x"].shape == (2, 16, 32, cx)
  if x_modality == "normal":
    norm = np.linalg.norm(tr["x"], axis=-1)
    ok = norm > 0
    assert ok.mean() > 0.5
    np.testing.assert_allclose(norm[ok], 1, atol=1e-5)


def test_finite_epochs_give_every_host_the_same_number_of_batches():
  src = id_source(7)
  counts = []
  for i in range(2):
    batches = list(iter(train(src, num_epochs=2, shard_index=i, shard_count=2,
                              crop_hw=(H, W), scale_range=(1.0, 1.0))))
    counts.append(len(batches))
  assert counts == [2 * 7 // 4] * 2  # 14 examples -> 3 global batches of 2 hosts x 2
