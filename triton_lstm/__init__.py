"""triton_lstm: LSTM as persistent Triton kernels (one launch per sequence and layer)."""
from . import reference
from .functional import init_forget_bias, lstm
from .modules import LSTM, LSTMCell
from .records import GateRecord

__all__ = ["GateRecord", "LSTM", "LSTMCell", "init_forget_bias", "lstm", "reference"]
__version__ = "0.1.0"
