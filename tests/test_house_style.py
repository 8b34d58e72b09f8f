"""House rules: core stays UI-free and torch-free on import; the code is ruff-clean."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from conftest import ROOT, needs_fashion, run_python

from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig

UI_LIBRARIES = {"streamlit", "gradio"}


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names |= {a.value for a in node.args[:1] if isinstance(a, ast.Constant)}
    return names


def test_imported_modules_sees_ui_imports():
    """The checker below would notice a UI import (a checker that cannot fail checks nothing)."""
    sample = ROOT / "app.py"
    assert "streamlit" in imported_modules(sample)


def test_core_never_imports_a_ui_library():
    files = sorted((ROOT / "core").rglob("*.py"))
    assert len(files) >= 10
    offenders = {
        str(f.relative_to(ROOT)): sorted(
            m for m in imported_modules(f) if m.split(".")[0] in UI_LIBRARIES
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_importing_core_does_not_import_torch():
    result = run_python(
        "import sys\n"
        "import core, core.config, core.store, core.runs, core.cli, core.data, core.presets\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]  # numpy: the imports really ran


CACHE_HIT = """
import json, sys
from core.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@needs_fashion
@pytest.mark.slow
def test_cache_hit_on_the_command_line_does_not_import_torch(tmp_path):
    """The point of the rule: answering from the store stays fast."""
    from core.runs import Stored, train_or_load
    from core.store import Store

    cfg = RunConfig(
        DataConfig(train_limit=256),
        ModelConfig("mlp"),
        TrainConfig(epochs=1, batch_size=256, schedule="constant", bf16="off"),
    )
    store = tmp_path / "store"
    assert isinstance(list(train_or_load(cfg, Store(store)))[-1], Stored)
    args = [
        "train",
        "--model",
        "mlp",
        "--train-limit",
        "256",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--schedule",
        "constant",
        "--bf16",
        "off",
        "--store",
        str(store),
        "--quiet",
    ]
    result = run_python(CACHE_HIT, *args)
    assert result.returncode == 0, result.stderr
    assert "cache hit" in result.stdout
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == {"code": 0, "torch": False}


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_is_clean(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
