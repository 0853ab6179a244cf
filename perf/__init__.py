"""perf/: the sweep users decide by (run `python perf/sweep.py [--quick]`, or `make sweep`).

Not part of the installed library (triton_lstm never imports it). Without a GPU the kernels
run in Triton's CPU interpreter, which must be chosen before triton is first imported:
importing this package does that, so import it before triton.
"""
import os

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
