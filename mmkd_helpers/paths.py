"""Where data lives: one rule, used by the CLI, the notebooks and ``data_download``.

``$MMKD_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/mmkd`` (``~/.cache/mmkd`` by default).
"""

import os
from pathlib import Path

DATA_DIR_ENV = "MMKD_DATA_DIR"


def default_data_dir() -> Path:
    """The root folder for downloaded and generated data (not created here)."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "mmkd"
