"""triton_lstm: LSTM as persistent Triton kernels (one launch per sequence and layer)."""
from . import reference
from .functional import init_forget_bias, lstm

__all__ = ["init_forget_bias", "lstm", "reference"]
__version__ = "0.1.0"
