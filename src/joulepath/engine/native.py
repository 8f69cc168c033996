"""Build a C source file into a cached shared library with the system compiler, for ctypes.

joulepath's own kernels (the engine's row-invariant attention, `engine/row_attention.py`; the AVX512-VNNI
and AVX2 GEMVs, `optimize/vnni.py`) are plain C with no torch headers. `build(source, flags, cc)` compiles one into
`$JOULEPATH_CACHE/kernels/<sha256 of source, flags and compiler version>.so` (default root
`~/.cache/joulepath`), written to a temporary name and renamed into place, so two processes building at once
both end with a complete library. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def kernel_dir() -> Path:
    root = os.environ.get("JOULEPATH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "joulepath")
    return Path(root) / "kernels"


def compiler() -> str | None:
    """The C compiler on PATH (`$CC`, default gcc), or None."""
    return shutil.which(os.environ.get("CC", "gcc"))


def compiler_run(cmd: list[str], what: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    """The compiler, bounded: a hung compiler makes the route unavailable with a reason, not a hung run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{cmd[0]} did not finish within {timeout_s:g} s building {what}") from e


def cpu_flags() -> list[str] | str:
    """The CPU's feature flags as /proc/cpuinfo spells them, or why they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError as e:
        return f"cannot read /proc/cpuinfo ({e})"
    return next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])


def build(source: Path, flags: tuple[str, ...], cc: str, what: str) -> Path:
    """Compile (or reuse) `source` into a shared library; raises RuntimeError with the compiler's message."""
    version = compiler_run([cc, "--version"], what).stdout.split("\n")[0]
    digest = hashlib.sha256(source.read_bytes() + " ".join((*flags, version)).encode()).hexdigest()[:24]
    out = kernel_dir() / f"{digest}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = compiler_run([cc, *flags, "-o", tmp, str(source)], what)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no message"]
            first = next((line for line in lines if "error" in line), lines[0])  # gcc's first error, not "In function"
            raise RuntimeError(f"{cc} failed to build {source.name}: {first}")
        os.chmod(tmp, 0o755)  # mkstemp made it 0600; a library must be readable to be mapped
        os.replace(tmp, out)  # atomic: a concurrent builder's rename of identical bytes is harmless
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
