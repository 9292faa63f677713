"""Profiles and generations: the kegs a machine runs, switched atomically.

    from undistro.kegs.generations import Profile
    profile = Profile("/var/lib/undistro/profiles/default")
    n = profile.build_and_switch(["/opt/undistro/store/<hash>-hello-2.12"])
    profile.rollback()

See docs/generations.md for the layout and the atomicity argument.
"""

from undistro.kegs._closure import Keg, closure, read_keg, store_of
from undistro.kegs._gc import GcReport, collect_garbage
from undistro.kegs._generations import (
    DEFAULT_PROFILE,
    PROFILES,
    Generation,
    GenerationDiff,
    GenKeg,
    Profile,
)
from undistro.kegs._store import DEFAULT_STORE, store_lock

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_STORE",
    "PROFILES",
    "GcReport",
    "GenKeg",
    "Generation",
    "GenerationDiff",
    "Keg",
    "Profile",
    "closure",
    "collect_garbage",
    "read_keg",
    "store_lock",
    "store_of",
]
