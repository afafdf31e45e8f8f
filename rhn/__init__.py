"""rhn: Highway Networks and Recurrent Highway Networks for PyTorch."""

from rhn.nn import (
    RHN,
    CharCNN,
    Highway,
    HighwayConv1d,
    HighwayConv2d,
    HighwayLayer,
    RHNCell,
    VariationalDropout,
)

__version__ = "0.1.0"

__all__ = [
    "RHN",
    "CharCNN",
    "Highway",
    "HighwayConv1d",
    "HighwayConv2d",
    "HighwayLayer",
    "RHNCell",
    "VariationalDropout",
    "__version__",
]
