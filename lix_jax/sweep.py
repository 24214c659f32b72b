"""`python -m lix_jax.sweep --config=... --sweep=configs/sweeps/X.py --workdir=DIR [--sweep_index=N]`.

DESIGN §6's sweep command, kept as a name: it runs `python -m lix_jax.main` with the same flags (the
one launcher; the library is `lix_jax.experiments.sweep`).
"""
import os
import sys

if __name__ == "__main__":
  os.execv(sys.executable, [sys.executable, "-m", "lix_jax.main", *sys.argv[1:]])
