"""lix_jax: LIX (Learning to Infuse X) knowledge distillation for RGB-X semantic segmentation.

The functional core (`lix_jax.kernels`, `lix_jax.losses`) depends on jax only; models, data and the
trainer need the `train` extras. Nothing heavy is imported here.
"""

__version__ = "0.1.0"

# The label of pixels that are never a target (DESIGN §1): unlabelled, out of range, crop padding.
# The one definition; data, losses, metrics and pictures import it from here.
IGNORE_INDEX = 255
