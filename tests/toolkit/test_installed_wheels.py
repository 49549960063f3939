"""Both distributions work installed, not only from this checkout: each is built as a wheel,
installed (not editable) into a folder outside the repository, and every module of every
package it declares is imported from there, with the repository off the path.

The installed dependencies are the running interpreter's (the wheels are installed with
--no-deps), so what this catches is the packaging itself: a package that imports one the
wheel does not carry, a module left out, data files missing.
"""

from __future__ import annotations

import json
import shutil
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


# A stranger's project: their own Flask service (this repository's WSGI example, copied) and
# the target file they would write for it, in a folder of its own.
STRANGER_TARGET = """\
app = "users_service:create_app"
factory = true
server = "waitress"
threads = 8
ready = "GET /readyz"
loop_probe = "GET /healthz"
deadline_s = 1.0

[env]
PASSWORD_HASH_TIME_COST = "1"
PASSWORD_HASH_MEMORY_KIB = "8"

[write]
request = "POST /users/"
json = { name = "{unique}", password = "{secret}" }
id_field = "id"

[read]
request = "GET /users/{id}"
"""


@pytest.mark.timeout(900)
def test_the_battery_runs_from_the_published_wheel_outside_the_repository(
        tmp_path: Path, fault_seed: int) -> None:
    """The toolkit as its users get it: `python -m build` makes the sdist and the wheel, the
    wheel goes into a new virtualenv with its dependencies from the package index, and the
    battery runs from there on a service in a folder of its own."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT / "toolkit")],
                   check=True, capture_output=True, text=True, timeout=600)
    (sdist,) = dist.glob("pytest_sqlite_faults-*.tar.gz")
    (wheel,) = dist.glob("pytest_sqlite_faults-*.whl")
    version = wheel.name.split("-")[1]
    assert sdist.name == f"pytest_sqlite_faults-{version}.tar.gz"
    assert f"## {version} " in (ROOT / "toolkit" / "CHANGELOG.md").read_text(), (
        f"toolkit/CHANGELOG.md has no entry for {version}")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[wsgi]", "flask",
                    "argon2-cffi"], check=True, capture_output=True, text=True, timeout=600)
    project = tmp_path / "stranger"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "wsgi_service" / "hardened.py",
                project / "users_service.py")
    (project / "service.toml").write_text(STRANGER_TARGET)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [str(venv / "bin" / "pytest"), "--pyargs", "sqlite_faults.battery",
         "--target", "service.toml", f"--fault-seed={fault_seed}", "-p", "no:cacheprovider",
         "--junitxml=battery.xml", "-q"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "9 passed" in run.stdout, run.stdout[-2000:]
