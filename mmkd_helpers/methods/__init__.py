"""Methods as plug-ins to the one training engine (:mod:`mmkd_helpers.training`)."""

import inspect

from .base import Hook, Method
from .lckd import LCKD
from .metakd import MetaKD
from .pmix import PMix
from .protokd import ProtoKD

METHODS = {"baseline": Method, "lckd": LCKD, "metakd": MetaKD, "protokd": ProtoKD, "pmix": PMix}


def _option_names(name: str) -> tuple:
    """The option names the method ``name`` accepts: its constructor's named parameters (none for the baseline,
    whose ``**options`` only exists to refuse them)."""
    parameters = inspect.signature(METHODS[name]).parameters.values()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def build_method(name: str, **options) -> Method:
    """The method ``name`` with ``options``; an unknown name or option is a one-line ``ValueError`` (the CLI's
    ``--option`` and a checkpoint's saved options both arrive here)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    accepted = _option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it accepts: {', '.join(accepted)}" if accepted else "it takes no options"
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"for method {name!r}; {takes}")
    return METHODS[name](**options)


__all__ = ["Hook", "Method", "METHODS", "build_method"]
