"""Layers: dense and convolutional highways, RHN cells and stacks, variational dropout.

``rhn.nn`` imports nothing from the rest of ``rhn``.
"""

from rhn.nn.charcnn import CharCNN
from rhn.nn.dropout import VariationalDropout, variational_mask
from rhn.nn.highway import Highway, HighwayLayer
from rhn.nn.highway_conv import HighwayConv1d, HighwayConv2d
from rhn.nn.rhn import RHN
from rhn.nn.rhn_cell import RHNCell

__all__ = [
    "RHN",
    "CharCNN",
    "Highway",
    "HighwayConv1d",
    "HighwayConv2d",
    "HighwayLayer",
    "RHNCell",
    "VariationalDropout",
    "variational_mask",
]
