"""Default values of every config key (DESIGN §6), shared by the files in `configs/`.

`configs/*.py` start from `base_config()` and change what their dataset and preset need, so every
config has the same keys and a `--config.<key>=...` override means the same thing everywhere.
"""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """All keys with the synthetic-dataset defaults (CPU-sized models)."""
  c = ml_collections.ConfigDict()
  c.mode = "pipeline"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_driving"
  c.data.builder_config = "default"
  c.data.data_dir = "workdirs/data"  # ArrayRecord files are built here on first use.
  c.data.root = ""  # manual_dir of real-format datasets (unused by the synthetic builder).
  c.data.x_modality = "depth"  # depth | disparity | normal
  c.data.crop_hw = (64, 192)
  c.data.scale_range = (0.75, 1.5)
  c.data.flip = True
  c.data.num_threads = 2
  c.data.num_workers = 0  # > 0: grain worker processes (mp_prefetch); use on GPU/TPU hosts.
  c.data.eval_split = "validation"
  c.data.test_split = "test"

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 800  # Students; the teacher runs pipeline.teacher_num_steps.
  c.train.batch_size = 16  # Global, over all devices and hosts.
  c.train.eval_batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 400
  c.train.ckpt_every = 400
  c.train.keep_checkpoints = 2
  c.train.max_bad_steps = 10  # Consecutive non-finite steps before the run stops.
  c.train.progress = True
  # Start over in a workdir that holds a run: its checkpoints/ and metrics.jsonl are moved to
  # <workdir>/previous_<time>/ (never deleted). Without it a changed config stops the run (exit 2).
  c.train.restart = False

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 100
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.grad_clip_norm = 0.0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.fusion = "intermediate"  # intermediate | late
  c.teacher.fusion_block = "gated"  # add | gated
  c.teacher.backbone = "resnet18"
  c.teacher.width = 0.25
  c.teacher.stem = "deep"
  c.teacher.decoder_channels = 32
  c.teacher.dtype = "float32"
  # ImageNet weights (.safetensors / .pth of a timm or torchvision ResNet; lix_jax.models.pretrained)
  # for the RGB and X encoders; "" = from scratch.
  c.teacher.pretrained = ""

  c.student = ml_collections.ConfigDict()
  c.student.backbone = "resnet18"
  c.student.width = 0.25
  c.student.stem = "deep"
  c.student.decoder_channels = 32
  c.student.dtype = "float32"
  c.student.pretrained = ""  # As teacher.pretrained, for the student's encoder.

  c.distill = ml_collections.ConfigDict()
  c.distill.method = "lix"
  c.distill.teacher_workdir = ""  # Set by the pipeline; required by mode=distill.
  c.distill.lambda_l = 1.0
  c.distill.lambda_f = 1.0
  c.distill.alpha = 1.0
  c.distill.beta = 1.0  # DESIGN §2.6: beta <= 1 (a large beta competes with CE).
  c.distill.temperature = 1.0
  # fixed | dynamic | trust | balanced | balanced_sym (the last two lix_jax's own)
  # DESIGN §2.3 default: balanced_sym, κ = 4, γ = 1 (best on validation and test, 3 seeds).
  c.distill.controller = "balanced_sym"
  c.distill.kappa = 4.0
  c.distill.class_balance = 1.0  # balanced(_sym) controllers: weights times n_class^-class_balance.
  c.distill.sigma = 1.0
  c.distill.mix = 0.5
  c.distill.lambda_kr = 0.0  # DESIGN §2.4: kernel regression one flag away (=1).
  c.distill.lambda_cka = 1.0
  c.distill.kernel = "linear"
  c.distill.stride = 2  # Kernel-regression keys: every 2nd pixel per axis (4x fewer keys).
  c.distill.kr_block_size = 256
  # auto | xla | pallas (fused kernel, lix_jax/kr_fused.py); auto = pallas for large taps on GPUs.
  c.distill.kr_impl = "auto"
  c.distill.cka_max_pixels = 1024
  c.distill.at_p = 2
  c.distill.taps = ("stage3", "decoder")
  c.distill.tap_weights = (1.0, 1.0)
  c.distill.unlabeled_split = "unlabeled"  # "" = labelled images only (the paper's regime).
  c.distill.unlabeled_batch_size = 16  # Global.
  c.distill.lambda_unlabeled = 1.0
  c.distill.pl_threshold = 0.0

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.methods = ("none", "kd", "pseudo_label", "lix")
  c.pipeline.teacher_num_steps = 1500
  c.pipeline.seeds = (0,)
  c.pipeline.num_predictions = 4

  # mode=benchmark (lix_jax/train/benchmark.py): rows of its registry x seeds; configs/benchmark.py.
  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.rows = ("teacher", "none", "unlabeled/kd", "unlabeled/pseudo_label", "unlabeled/lix")
  c.benchmark.seeds = (0, 1, 2)

  c.parallel = ml_collections.ConfigDict()
  c.parallel.backend = "shard_map"  # shard_map | pmap
  c.parallel.multihost = False
  c.parallel.coordinator_address = ""
  c.parallel.num_processes = 1
  c.parallel.process_id = 0

  # mode=eval / mode=predict: which run of --workdir to load.
  c.eval = ml_collections.ConfigDict()
  c.eval.role = "distill"  # teacher | student | distill (a distilled student)
  c.eval.split = ""  # "" = data.test_split (KITTI semantics: "validation"; it has no test labels).
  c.predict = ml_collections.ConfigDict()
  c.predict.input_dir = ""  # A folder of RGB images (*.png, *.jpg); teachers also read <stem>_depth.png.
  c.predict.output_dir = ""  # Default: <workdir>/predictions.
  c.predict.intrinsics = (0.0, 0.0, 0.0, 0.0)  # fx, fy, cx, cy: teachers with disparity / normal X.
  c.predict.baseline = 0.54
  # An exported artifact (<workdir>/export/student.jaxexport, lix_jax/export.py): predict from it
  # with jax, numpy and Pillow only (no flax, no lix_jax.models); "" = the workdir's checkpoint.
  c.predict.exported = ""

  return c
