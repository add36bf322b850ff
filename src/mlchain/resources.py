"""Where mlchain's shipped folders are: `jobs/` (the chain's JJB YAML), `dockerfiles/` (one
image per framework) and `pyproject.toml` (what the images install).

They live at the top of the checkout, where the project's layout puts them. A wheel carries
copies inside the package, under `_shipped/` (setup.py's build step copies them in), so an
installed mlchain finds them without a checkout. A checkout wins over the copies: in an
editable install the files being edited are the ones used.
"""

from __future__ import annotations

from pathlib import Path

from mlchain.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE_DIR / "_shipped"
SHIPPED = ("jobs", "dockerfiles", "pyproject.toml")


def checkout_root() -> Path | None:
    """The checkout this package runs from (src/mlchain -> two folders up), if it is one."""
    root = PACKAGE_DIR.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "mlchain").is_dir() else None


def shipped(name: str) -> Path:
    """The path of one shipped folder or file: the checkout's, else the wheel's copy."""
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not shipped with mlchain (one of {', '.join(SHIPPED)})")
    root = checkout_root()
    candidates = ([root / name] if root is not None else []) + [SHIPPED_DIR / name]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ConfigError(f"mlchain's {name} was not found (looked in {', '.join(map(str, candidates))})",
                      hint="reinstall mlchain (pip install --force-reinstall mlchain) or run it from a checkout")
