"""The stage order of docs/ARCHITECTURE.md, enforced: import-linter's contracts in .importlinter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed: pip install -e '.[test]'"
    result = subprocess.run([lint, str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The contract can fail: a copy of the package whose data stage imports training is refused."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint
    shutil.copytree(ROOT / "src" / "cmmd", tmp_path / "cmmd", ignore=shutil.ignore_patterns("*.safetensors"))
    with open(tmp_path / "cmmd" / "data" / "negatives.py", "a") as f:
        f.write("\nfrom cmmd.train import loop  # noqa: E402,F401\n")
    result = subprocess.run([lint, str(ROOT / ".importlinter")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "cmmd.data is not allowed to import cmmd.train" in result.stdout


def test_every_top_level_module_has_a_layer() -> None:
    """A new module or package under src/cmmd must be placed in the stage order, not dodge it."""
    text = (ROOT / ".importlinter").read_text()
    layers = text.split("layers =", 1)[1].split("\n\n", 1)[0]
    placed = {name.strip() for line in layers.splitlines() for name in line.split("|") if name.strip()}
    package = ROOT / "src" / "cmmd"
    found = {f"cmmd.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {f"cmmd.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert found <= placed, f"not in .importlinter's layers: {sorted(found - placed)}"
