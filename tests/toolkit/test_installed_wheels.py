"""Both distributions work installed, not only from this checkout: each is built as a wheel,
installed (not editable) into a folder outside the repository, and every module of every
package it declares is imported from there, with the repository off the path.

The installed dependencies are the running interpreter's (the wheels are installed with
--no-deps), so what this catches is the packaging itself: a package that imports one the
wheel does not carry, a module left out, data files missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)

# Imports every module of the named top-level packages from wherever they are found, and
# prints where that was: the test checks it is the installed copy.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
found = {}
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    found[name] = package.__file__
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if module.name.rsplit(".", 1)[-1] == "__main__":
            continue  # runs its command on import
        importlib.import_module(module.name)
print(json.dumps(found))
"""


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def top_level_packages(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist()
                if name.endswith("/__init__.py") and name.count("/") == 1}


@pytest.mark.parametrize("source", ["toolkit", "."], ids=["toolkit", "service"])
def test_every_declared_package_imports_from_the_installed_wheel(
        source: str, tmp_path: Path) -> None:
    wheel = build_wheel((ROOT / source).resolve(), tmp_path / "wheel")
    site = tmp_path / "site"
    # The service's report and power-loss packages are built on the toolkit (its "report"
    # extra): installed beside it, from its own wheel, as ./run does from its folder.
    beside = [build_wheel(ROOT / "toolkit", tmp_path / "toolkit")] if source != "toolkit" else []
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel), *map(str, beside)],
                   check=True, capture_output=True)
    packages = sorted(top_level_packages(wheel))
    assert packages, f"{wheel.name} declares no package"
    # -S: no site-packages .pth files, so the editable installs of this checkout do not
    # answer the imports; the interpreter's installed dependencies come back through
    # PYTHONPATH after the wheel's folder.
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    env = {"PYTHONPATH": ":".join([str(site), *dependencies]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-S", "-c", IMPORT_ALL, *packages], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for package, path in json.loads(done.stdout).items():
        assert Path(path).is_relative_to(site), f"{package} imported from {path}"
