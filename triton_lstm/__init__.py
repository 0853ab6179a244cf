"""triton_lstm: LSTM as persistent Triton kernels (one launch per sequence and layer)."""
from . import reference
from .functional import lstm

__all__ = ["lstm", "reference"]
__version__ = "0.1.0"
