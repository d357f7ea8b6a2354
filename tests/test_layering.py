"""The engine does not depend on the dataset generator: `datasets_gen` imports `compare`, never the reverse."""
import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import compare
assert "datasets_gen" not in sys.modules, "import compare imported datasets_gen"
for info in pkgutil.walk_packages(compare.__path__, "compare."):
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as err:  # an optional dependency (ray, CUDA builds) is absent
        if err.name.split(".")[0] in ("compare", "datasets_gen"):
            raise
        continue
    leaked = sorted(m for m in sys.modules if m == "datasets_gen" or m.startswith("datasets_gen."))
    assert not leaked, f"import {info.name} imported {leaked}"
print("ok")
"""


def test_no_compare_module_imports_datasets_gen():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
