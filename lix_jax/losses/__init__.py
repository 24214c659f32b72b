"""Distillation losses (DESIGN §2-§3): pure, jittable functions and the method registry.

`logit`: cross-entropy, KD, DKD, DWLD and pseudo-labels; `dwc`: DWLD's controller registry;
`pixel`: the per-pixel building blocks (`masked_mean`, one-hot targets) of both;
`feature`: ARFD (kernel-regression recalibration + CKA), FitNet, CWD, AT;
`registry`: `METHODS` / `get_method` and `make_distill_loss(method, distill_config)`, the one
builder of a method's losses (called once, outside the traced step).
"""

from lix_jax.losses.dwc import CONTROLLERS
from lix_jax.losses.dwc import get_controller
from lix_jax.losses.feature import arfd_loss
from lix_jax.losses.feature import at_loss
from lix_jax.losses.feature import cwd_loss
from lix_jax.losses.feature import fitnet_loss
from lix_jax.losses.feature import kr_recalibrate
from lix_jax.losses.logit import IGNORE_INDEX
from lix_jax.losses.logit import cross_entropy
from lix_jax.losses.logit import dkd_loss
from lix_jax.losses.logit import dkd_terms
from lix_jax.losses.logit import dwld_loss
from lix_jax.losses.logit import kd_loss
from lix_jax.losses.logit import masked_mean
from lix_jax.losses.logit import pseudo_label_loss
from lix_jax.losses.logit import teacher_targets
from lix_jax.losses.registry import FEATURE_LOSSES
from lix_jax.losses.registry import LOGIT_LOSSES
from lix_jax.losses.registry import METHODS
from lix_jax.losses.registry import Method
from lix_jax.losses.registry import DistillLoss
from lix_jax.losses.registry import distill_losses
from lix_jax.losses.registry import get_method
from lix_jax.losses.registry import make_distill_loss

__all__ = [
    "CONTROLLERS", "DistillLoss", "FEATURE_LOSSES", "IGNORE_INDEX", "LOGIT_LOSSES", "METHODS",
    "Method", "arfd_loss", "at_loss", "cross_entropy", "cwd_loss", "distill_losses", "dkd_loss",
    "dkd_terms", "dwld_loss", "fitnet_loss", "get_controller", "get_method", "kd_loss",
    "kr_recalibrate", "make_distill_loss", "masked_mean", "pseudo_label_loss", "teacher_targets",
]
