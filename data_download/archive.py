"""Safe extraction of tar and tar.gz archives: all or nothing, and nothing outside the target folder.

A tar member can name any path (``../../.bashrc``, ``/etc/passwd``) or be a link or a device file;
extracting such an archive blindly lets whoever made it write anywhere you can. We check every
member ourselves before extracting it, and refuse the whole archive at the first bad one. Python's
``filter="data"`` does similar checks; we keep it as a second line of defence, but the explicit
checks are what this module teaches.

Everything is extracted into a temporary folder beside the destination and renamed onto it only
when the whole archive went through (:func:`mmkd_helpers.fileio.atomic_path`), so a refused,
truncated or interrupted extraction leaves the destination exactly as it was.
"""

import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from mmkd_helpers.fileio import atomic_path

# Python's own extraction filter, where this Python has it (3.11.4+, 3.12): older 3.11 releases rely on the
# explicit checks of member_problem alone.
DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

from .fetch import DownloadError, progress_bar

BUFFER = 1 << 20


class ArchiveError(DownloadError):
    """The archive is unsafe, truncated or corrupt; the destination was left untouched."""


def member_problem(member: tarfile.TarInfo):
    """Why ``member`` must not be extracted, or None for a plain file or folder with a safe relative path."""
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a path that escapes the target folder ('..')"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if not (member.isfile() or member.isdir()):
        return "not a plain file or folder"
    return None


def is_junk(name: str) -> bool:
    """macOS metadata (AppleDouble ``._*`` files, ``__MACOSX/``): not data, and it confuses globbing."""
    return any(part.startswith("._") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def safe_extract(archive, dest, *, subdir=None, check=None, progress=True) -> int:
    """Extract ``archive`` (tar, tar.gz) into the folder ``dest``; return the number of files written.

    ``subdir``: keep only the members under this folder of the archive, placed directly in ``dest``
    (other members are still checked for safety, then skipped). ``check``: called with the complete
    temporary folder before it is renamed onto ``dest``; if it raises, nothing is changed.
    """
    archive, dest = Path(archive), Path(dest)
    prefix = PurePosixPath(subdir) if subdir else None
    unchanged = f"nothing was extracted and {dest} is unchanged"
    files = 0
    try:
        with atomic_path(dest) as tmp, open(archive, "rb") as raw, \
                progress_bar(archive.stat().st_size, desc=f"extracting {archive.name}", enabled=progress) as bar:
            tmp.mkdir()
            # Stream mode ("r|*"): one sequential pass over the file, gzip detected automatically.
            with tarfile.open(fileobj=_Counted(raw, bar), mode="r|*", bufsize=BUFFER, copybufsize=BUFFER) as tar:
                for member in tar:
                    problem = member_problem(member)
                    if problem:
                        raise ArchiveError(f"{archive}: refused: member {member.name!r} is {problem}; {unchanged}")
                    relative = _relative(member.name, prefix)
                    if relative is None or is_junk(member.name):
                        continue
                    tar.extract(member.replace(name=relative, deep=False), tmp, **DATA_FILTER)
                    files += member.isfile()
            if files == 0:
                raise ArchiveError(f"{archive}: no files found{f' under {subdir}/' if subdir else ''}; {unchanged}")
            if check is not None:
                check(tmp)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}); {unchanged}") from None
    return files


def _relative(name: str, prefix):
    """The member's path inside ``prefix`` (None when outside it, or when it is ``prefix`` itself)."""
    path = PurePosixPath(name)
    if prefix is None:
        return str(path)
    if path == prefix or not path.is_relative_to(prefix):
        return None
    return str(path.relative_to(prefix))


class _Counted:
    """A read-only file wrapper that reports the bytes read to a progress bar."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def read(self, size=-1):
        data = self.raw.read(size)
        self.bar.update(len(data))
        return data
