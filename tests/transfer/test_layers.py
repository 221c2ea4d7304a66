"""The transfer package's layers: each imports only those below it, and importing the
package loads neither aiobotocore nor the AWS CRT."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fsx_stage.transfer

PACKAGE = "fsx_stage.transfer"
ROOT = Path(fsx_stage.transfer.__file__).parent

#: What each layer may import from the transfer package (besides itself).
ALLOWED = {
    "shared": {"shared"},
    "s3": {"shared"},
    "local": {"shared"},
    "objects": {"shared", "s3", "local"},
    "run": {"shared", "s3", "local", "objects"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    """The layer of a module of the package; None for the package itself."""
    rest = module.removeprefix(PACKAGE).lstrip(".").split(".")[0]
    if not rest:
        return None
    return rest if rest in ALLOWED else "shared"


def _imported(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, also inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from fsx_stage.transfer.s3 import sse`` imports the module ``...s3.sse``
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    layers = {_layer(_module_name(path)) for path in MODULES} - {None}
    assert layers == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_module_imports_only_its_own_layer_or_those_below(path: Path) -> None:
    layer = _layer(_module_name(path))
    if layer is None:
        return  # the package __init__ re-exports from every layer, lazily
    wrong = {
        name
        for name in _imported(path)
        if (other := _layer(name)) is not None and other != layer and other not in ALLOWED[layer]
    }
    assert not wrong, f"{layer} layer imports {sorted(wrong)}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from fsx_stage.transfer.run import mover\n")
    assert _imported(source) == {"fsx_stage.transfer.run", "fsx_stage.transfer.run.mover"}
    assert _layer("fsx_stage.transfer.run.mover") not in ALLOWED["local"]


def test_importing_the_package_loads_neither_aiobotocore_nor_the_crt() -> None:
    code = (
        "import sys, fsx_stage.transfer as t\n"
        "assert callable(t.transfer) and t.S3Settings\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiobotocore', 'awscrt'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_package_names_what_it_exports() -> None:
    for name in fsx_stage.transfer.__all__:
        assert getattr(fsx_stage.transfer, name) is not None
    with pytest.raises(AttributeError):
        _ = fsx_stage.transfer.no_such_name  # type: ignore[attr-defined]
