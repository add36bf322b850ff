"""The wheel carries the top-level jobs/ and dockerfiles/ (and pyproject.toml, which the
framework images install from) inside the package, as mlchain/_shipped/: an installed mlchain
finds them through mlchain.resources without a checkout. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("jobs", "dockerfiles", "pyproject.toml")  # mlchain.resources.SHIPPED


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "mlchain" / "_shipped"
        for name in SHIPPED:
            source = ROOT / name
            if not source.exists():  # an image's build context has no jobs/: nothing to ship
                continue
            dest = target / name
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)


setup(cmdclass={"build_py": BuildPyWithShipped})
