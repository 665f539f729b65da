"""mtp-edu: Multi-Token Prediction (DeepSeek-V3 and relatives), small enough to read in one sitting."""
from .config import MTPConfig
from .decoding import compile_for_decoding, generate, speculative_generate
from .losses import mtp_loss, mtp_loss_backward
from .model import MTPModel, MTPOutput
from .pretrained import list_pretrained, load_pretrained
from .shifts import shift_table
from .tree import tree_generate

__version__ = "0.1.0"                  # the only place the version is written (pyproject reads it)
__all__ = ["MTPConfig", "MTPModel", "MTPOutput", "shift_table", "mtp_loss", "mtp_loss_backward",
           "generate", "speculative_generate", "tree_generate", "compile_for_decoding", "load_pretrained",
           "list_pretrained"]
