"""Resumable, verified HTTP downloads with nothing but the standard library.

Why it works the way it does:

* The bytes go to ``<target>.part``; the file gets its final name only after its size and checksum
  are verified. A file under the final name is therefore always a good one, and a failed download
  never touches it.
* An interrupted transfer resumes with an HTTP ``Range: bytes=N-`` request. The bytes already on disk
  are hashed again first: we only trust a checksum whose every byte we saw.
* A server may ignore ``Range`` (it answers 200 with the whole file: we start again from byte 0) or
  answer 416 (the part is already complete, or it is longer than the file: we check which).
* Transient failures (connection reset or cut, timeouts, HTTP 408/429/5xx) are retried with
  exponential backoff; permanent ones (404, 403, a wrong checksum) stop at once with one
  :class:`DownloadError` naming the URL and what is wrong.
"""

import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
USER_AGENT = "mmkd-data-download/0.1 (Python urllib)"
TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """Getting or unpacking data failed. The message names the URL or file and says what is wrong."""


class _Transient(Exception):
    """A failure worth another try (network hiccup, busy server); never leaves this module."""


def progress_bar(total=None, initial=0, desc=None, enabled=True):
    """A byte-counting tqdm bar (imported here so that ``import data_download`` stays light)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _hash_into(path: Path, hashers: dict, bar) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))


def hash_file(path, algorithm="md5", progress=False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    path = Path(path)
    hashers = {algorithm: hashlib.new(algorithm)}
    with progress_bar(path.stat().st_size, desc=f"{algorithm} {path.name}", enabled=progress) as bar:
        _hash_into(path, hashers, bar)
    return hashers[algorithm].hexdigest()


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"not enough disk space in {folder} for {what}: need {needed / 1e9:.2f} GB, "
                            f"{free / 1e9:.2f} GB free (set MMKD_DATA_DIR or --dest to another disk)")


def download(url, target, *, size=None, md5=None, sha256=None, retries=5, backoff=2.0, timeout=60,
             progress=True) -> Path:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify it, and return ``target``.

    ``size``, ``md5`` and ``sha256`` are checked when given. An existing ``target`` that passes the
    checks is kept as it is (no network access). ``retries`` counts consecutive failed attempts that
    made no progress; the wait doubles after each one, starting at ``backoff`` seconds.
    """
    target = Path(target)
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    if target.exists():
        if _matches(target, size, expected, progress):
            return target
        print(f"{target} does not match the expected size/checksum: downloading it again "
              "(it is replaced only once the new copy is verified)", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")

    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            digests = _attempt(url, part, size, tuple(expected), timeout, progress)
            break
        except _Transient as exc:
            grew = part.exists() and part.stat().st_size > before
            failures = 0 if grew else failures + 1
            if failures > retries:
                kept = (f"; the {part.stat().st_size} bytes received are kept in {part}. Run the same command "
                        "again to resume." if part.exists() else ". Run the same command again later.")
                raise DownloadError(f"{url}: giving up after {retries + 1} failed attempts in a row ({exc}){kept}") \
                    from None
            wait = backoff * 2 ** max(failures - 1, 0)
            print(f"{url}: {exc}; retrying in {wait:g} s", file=sys.stderr)
            time.sleep(wait)

    _verify(url, part, size, expected, digests)
    os.replace(part, target)
    return target


def _matches(path: Path, size, expected: dict, progress: bool) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return all(hash_file(path, name, progress) == value for name, value in expected.items())


def _verify(url, part: Path, size, expected: dict, digests: dict) -> None:
    """Size and checksums of the complete ``.part``; on a mismatch it is deleted (resuming cannot fix it)."""
    problem = None
    if size is not None and part.stat().st_size != size:
        problem = f"size {part.stat().st_size} bytes, expected {size}"
    for name, value in expected.items():
        if problem is None and digests[name] != value:
            problem = f"{name} checksum {digests[name]}, expected {value}"
    if problem:
        part.unlink()
        raise DownloadError(f"{url}: the downloaded file has {problem}. It was deleted and nothing else was "
                            "changed. Run the command again to download it afresh; if that fails the same way, "
                            "the file on the server is not the one this course expects.")


def _content_range(header):
    """``'bytes 100-199/200'`` -> (100, 200); ``'bytes */200'`` -> (None, 200); missing -> (None, None)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _attempt(url, part: Path, size, algorithms, timeout, progress) -> dict:
    """One request, appending to ``part``; returns the digests of the complete file."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # a stale part from some other file
        part.unlink()
        offset = 0
    hashers = {name: hashlib.new(name) for name in algorithms}
    if offset:
        with progress_bar(offset, desc=f"re-checking {part.name}", enabled=progress) as bar:
            _hash_into(part, hashers, bar)
    if size is not None and offset == size:
        return {name: h.hexdigest() for name, h in hashers.items()}

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == offset:  # nothing left to fetch: the part is the whole file
                return {name: h.hexdigest() for name, h in hashers.items()}
            part.unlink()
            raise _Transient(f"the server cannot resume at byte {offset} (HTTP 416); starting from scratch")
        if exc.code in TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"cannot connect: {getattr(exc, 'reason', exc)}") from None

    with response:
        if offset and response.status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"the server resumed at byte {start} instead of {offset}; starting from scratch")
        elif offset:  # 200: the server ignored Range and sends the whole file
            offset = 0
            hashers = {name: hashlib.new(name) for name in algorithms}
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        if remaining is not None:
            if size is not None and offset + remaining != size:
                raise DownloadError(f"{url}: the server reports {offset + remaining} bytes, expected {size}")
            ensure_free_space(part.parent, remaining, url)
        received = 0
        with open(part, "ab" if offset else "wb") as f, \
                progress_bar(size or (offset + remaining if remaining is not None else None), offset,
                             desc=part.name[:-len(".part")], enabled=progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # the part so far is kept for resuming
                    raise _Transient(f"transfer cut after {offset + received} bytes ({exc})") from None
                if not chunk:
                    break
                f.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if remaining is not None and received < remaining:
        raise _Transient(f"connection closed after {offset + received} of {offset + remaining} bytes")
    return {name: h.hexdigest() for name, h in hashers.items()}
