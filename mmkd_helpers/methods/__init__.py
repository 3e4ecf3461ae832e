"""Methods as plug-ins to the one training engine (:mod:`mmkd_helpers.training`)."""

from .base import Hook, Method
from .lckd import LCKD
from .metakd import MetaKD
from .pmix import PMix
from .protokd import ProtoKD

METHODS = {"baseline": Method, "lckd": LCKD, "metakd": MetaKD, "protokd": ProtoKD, "pmix": PMix}


def build_method(name: str, **options) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)


__all__ = ["Hook", "Method", "METHODS", "build_method"]
