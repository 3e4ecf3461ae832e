"""data_download: get the course's datasets onto your machine -- verified, resumable, safe.

``python -m data_download --help`` (or ``mmkd download --help``) lists the commands; README.md in this
folder gives sizes, licences and citations. Importing this package is cheap: numpy, scipy and
nibabel load only inside the commands that need them, and torch never does.
"""

from .cli import main
from .fetch import DownloadError

__all__ = ["DownloadError", "main"]
