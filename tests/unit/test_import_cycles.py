"""scripts/import_cycles.py on small packages made here (which imports count, which cycles
it finds, its exit status), then on mlchain itself: no cycle, deferred imports counted too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_cycles.py"


def package(tmp: Path, files: dict[str, str]) -> Path:
    root = tmp / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root), *flags], capture_output=True, text=True,
                          check=False, timeout=60)


def test_a_module_level_cycle_through_relative_and_from_imports_exits_1(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.a\n",
        "d.py": "import pkg.a\n",  # depends on the cycle, is not in it
    })
    out = run(root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "module-level cycles: 1" in out.stdout
    assert "3 modules: pkg.a, pkg.b, pkg.sub.c" in out.stdout
    assert "-> pkg.b   (pkg/a.py:1)" in out.stdout and "-> pkg.a   (pkg/sub/c.py:1)" in out.stdout


def test_deferred_cycles_are_reported_apart_and_type_only_imports_not_at_all(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "a.py": "from pkg.b import f\n",
        "b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\n"
                 "def f():\n    from pkg import a\n    return a\n"),
        "c.py": "from pkg.b import f\nclass C: ...\n",
    })
    out = run(root)
    assert out.returncode == 0, out.stdout
    assert "2 module-level, 1 deferred (in functions), 1 type-only" in out.stdout
    assert "module-level cycles: 0" in out.stdout
    assert "cycles once deferred imports count too: 1 (1 not already module-level)" in out.stdout
    assert "pkg.b -> pkg.a   (pkg/b.py:5)" in out.stdout
    assert "pkg.c" not in out.stdout.split("cycles once")[1]  # b -> c is type-only: no cycle b <-> c
    assert run(root, "--deferred").returncode == 1


def test_no_cycle_exits_0_and_a_folder_that_is_no_package_exits_2(tmp_path: Path) -> None:
    root = package(tmp_path, {"a.py": "import os\nfrom pkg import b\n", "b.py": "X = 1\n"})
    out = run(root, "--deferred")
    assert out.returncode == 0 and "module-level cycles: 0" in out.stdout
    assert "cycles once deferred imports count too: 0" in out.stdout
    missing = run(tmp_path / "nowhere")
    assert missing.returncode == 2 and "not a package folder" in missing.stderr


def test_mlchain_imports_form_no_cycle_even_through_deferred_imports() -> None:
    out = run(SCRIPT.parents[1] / "src" / "mlchain", "--deferred")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "module-level cycles: 0" in out.stdout
    assert "cycles once deferred imports count too: 0" in out.stdout
