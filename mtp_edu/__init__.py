"""mtp-edu: Multi-Token Prediction (DeepSeek-V3 and relatives), small enough to read in one sitting."""
from .config import MTPConfig
from .losses import mtp_loss, mtp_loss_backward
from .model import MTPModel, MTPOutput
from .shifts import shift_table

__version__ = "0.1.0"
__all__ = ["MTPConfig", "MTPModel", "MTPOutput", "shift_table", "mtp_loss", "mtp_loss_backward"]
