"""undistro: one lean agent per machine — configuration manager, supervisor, packager.

The public surface is re-exported here; everything else lives in private
modules and may change.
"""

from undistro.errors import (
    ApplyError,
    PolicyError,
    StateError,
    UndistroError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "ApplyError",
    "PolicyError",
    "StateError",
    "UndistroError",
    "ValidationError",
    "__version__",
]
