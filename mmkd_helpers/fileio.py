"""Safe files: atomic writes (a file or a folder appears complete under its final name, or not at all), clear
errors when the disk is full, and a lock for work that two processes may start at once (two notebooks)."""

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# Errors that mean the bytes could not be stored, whatever was being written; other OSErrors raised inside
# atomic_path (a missing input, a network error while downloading into it) are not about the destination.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class WriteError(OSError):
    """A file could not be written; ``filename`` names it and ``strerror`` says what went wrong and what was kept."""

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Works for a file or a folder that the caller creates at the yielded path. On any exception the
    temporary is removed and ``path`` is left as it was; a full disk (or quota, or read-only disk) is
    reported as a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / (path.name + suffix)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, WriteError) or exc.errno not in DISK_ERRORS:
            raise
        kept = f"the previous {'folder' if path.is_dir() else 'file'} is unchanged" if path.exists() \
            else "nothing was written"
        raise WriteError(exc.errno, f"could not write ({exc.strerror}); {kept}", str(path)) from exc
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path, waiting=None):
    """Hold an exclusive lock on the file ``path`` (created, and removed on leaving) while the block runs.

    Another process or thread taking the same lock waits until this one leaves; ``waiting`` is printed to
    stderr when it has to wait. POSIX only (``fcntl.flock``): without fcntl (Windows) there is no lock,
    and two processes must not build the same thing at once.
    """
    if fcntl is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, file=sys.stderr, flush=True)
                    waiting = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder we waited for removed the file on leaving: a lock on that removed file excludes no one
            # who opens the path now, so start again on whatever file the path names.
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking, so that no one locks the file once it is gone
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def one_line(exc: Exception) -> str:
    """An error as the one line a command prints: the operating system's own (e.g. "[Errno 13] Permission denied:
    'x'") as "x: Permission denied", the file first like every other message; any other error's text on one line."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}" + (f" (-> {exc.filename2})" if exc.filename2 is not None else "")
    return " ".join(str(exc).split())
