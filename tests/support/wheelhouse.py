"""Offline wheels for a fresh virtual environment: the client built from client/, its dependencies repacked.

No index is reachable from the tests, so every dependency's wheel is rebuilt from the distribution already
installed here (its files, as its RECORD lists them, with its own dist-info), and `pip install --no-index
--find-links` resolves the client's requirements against those wheels only, exactly as it would on PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Return the installed distributions a set of requirements pulls in (extras and markers honoured)."""
    found: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        key = (_normal(requirement.name), tuple(sorted(requirement.extras)))
        if key in found or requirement.name == "gatekeeper-client":
            continue
        found.add(key)
        distribution = importlib.metadata.distribution(requirement.name)
        for line in distribution.requires or []:
            needed = Requirement(line)
            if _wanted(needed, tuple(requirement.extras) or ("",)):
                todo.append(needed)
    return {name for name, _ in found}


def repack(name: str, folder: Path) -> Path:
    """Write an installed distribution back into a wheel (files under site-packages only)."""
    distribution = importlib.metadata.distribution(name)
    tags = [line.split(": ", 1)[1] for line in (distribution.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag: ")] or ["py3-none-any"]
    stem = f"{_normal(distribution.metadata['Name'])}-{distribution.version}"
    target = folder / f"{stem}-{tags[0]}.whl"
    root = Path(str(distribution.locate_file("")))
    records: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for entry in distribution.files or []:
            path = str(entry)
            if path.startswith("..") or path.endswith("RECORD") or "__pycache__" in path:
                continue
            data = (root / path).read_bytes()
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        record = next(str(e) for e in distribution.files or [] if str(e).endswith(".dist-info/RECORD"))
        wheel.writestr(record, "\n".join([*records, f"{record},,"]) + "\n")
    return target


def build(folder: Path, *, extras: tuple[str, ...] = ()) -> Path:
    """Build the client's wheel and its dependencies' wheels into `folder`; return the client's wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--wheel-dir", str(folder), str(REPO / "client")], check=True, timeout=120,
                   capture_output=True)
    wheel = next(folder.glob("gatekeeper_client-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(": ", 1)[1] for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist: ")]
    selected = [r for r in requires if _wanted(Requirement(r), extras or ("",))]
    for name in sorted(closure(selected)):
        repack(name, folder)
    return wheel


def _wanted(requirement: Requirement, extras: tuple[str, ...]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(_environment(extra)) for extra in extras)


def _environment(extra: str) -> dict[str, str]:
    environment: dict[str, str] = dict(default_environment())  # type: ignore[arg-type]
    environment["extra"] = extra
    return environment
