"""The layers point one way (cli -> estimators -> featcache) and no module imports another's privates.

A static check over the source (``ast``): it fails as soon as a new import breaks the rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("featcache", "estimators", "cli")
# what each package may import of the others
ALLOWED = {"featcache": set(), "estimators": {"featcache"}, "cli": {"featcache", "estimators"}}


def _imports(path: Path):
    """(line, module, name or None) for every import in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg[: len(pkg) - node.level]
                mod = ".".join([*base, mod] if mod else base)
            for a in node.names:
                yield node.lineno, mod, a.name


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _violations(package: str) -> list[str]:
    out = []
    for f in _files(package):
        rel = f.relative_to(ROOT)
        own = ".".join(rel.with_suffix("").parts)
        for line, mod, name in _imports(f):
            top = mod.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                out.append(f"{rel}:{line}: {package} must not import {mod}")
            parts = mod.split(".")
            if top in PACKAGES and top != package and any(p.startswith("_") for p in parts[1:]):
                out.append(f"{rel}:{line}: imports the private module {mod} of another package")
            if name and name.startswith("_") and not name.startswith("__") and mod != own and top in PACKAGES:
                out.append(f"{rel}:{line}: imports the private name {name} from {mod}")
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_point_one_way_and_privates_stay_private(package):
    assert _files(package), package
    assert _violations(package) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: a planted upward import and a private import are both reported."""
    me = sys.modules[__name__]  # this module, to point ROOT elsewhere
    pkg = tmp_path / "featcache"
    pkg.mkdir()
    (pkg / "bad.py").write_text("from estimators import FrameClassifier\nfrom featcache.store import _sha256\n")
    monkeypatch.setattr(me, "ROOT", tmp_path)
    got = me._violations("featcache")
    assert any("must not import estimators" in v for v in got) and any("private name _sha256" in v for v in got), got
