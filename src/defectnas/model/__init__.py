"""The network: registry of cell ops, cells, encoders, matching layer and the classifier."""

from .cell import Cell
from .classifier import DefectNet, Encoded
from .encoder import Encoder
from .ops import FFNS, MIXERS

__all__ = ["Cell", "DefectNet", "Encoded", "Encoder", "FFNS", "MIXERS"]
