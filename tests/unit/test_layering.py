"""The package's layers: imports run only downward, there are no circles, the engine does not import the
dataset generator, and architecture facts stay in `compare/families/`.

The import graph is read with `ast` (every import, those inside functions and `if TYPE_CHECKING:`
included), so the test needs no import of the package and no new dependency.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compare import families

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "compare"

# lowest first; a module may import its own layer and the layers below it, never one above
LAYERS = (
    ("base",),
    ("ssm",),
    ("families",),
    ("handle",),
    ("engine",),
    ("measures",),
    ("figures",),
    ("analyses",),
    ("reproduce", "study"),
    ("cli", "__main__", "__init__"),  # the top: compare/cli.py, compare/__main__.py, compare/__init__.py
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str:
    """compare.analyses.noise -> analyses; compare.cli -> cli; compare -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import of a module of the package."""
    mods = modules()
    edges = []
    for module, path in mods.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)] + ([node.module] if node.module else [])
                    source = ".".join(base)
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.append((module, target, node.lineno))
    return edges


def test_every_module_sits_in_a_declared_layer():
    unplaced = [m for m in modules() if layer_of(m) not in RANK]
    assert not unplaced, (f"modules outside the declared layers {[n for names in LAYERS for n in names]}: "
                          f"{unplaced}; move each into its layer's folder (or declare a new layer here)")


def test_imports_run_only_downward():
    mods = modules()
    upward = [f"{mods[a].relative_to(ROOT)}:{line}: {a} ({layer_of(a)}) imports {b} ({layer_of(b)})"
              for a, b, line in imports()
              if layer_of(a) in RANK and layer_of(b) in RANK and RANK[layer_of(b)] > RANK[layer_of(a)]]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    where = {}
    for a, b, line in imports():
        graph.setdefault(a, set()).add(b)
        where[a, b] = line
    # a package importing its own submodules (its __init__ re-exporting them) is how packages are made;
    # the submodule importing the package back is the circle, and it is reported
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                circles.append(" -> ".join(f"{x} (line {where[x, y]})" for x, y in zip(cycle, cycle[1:]))
                               + f" -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_base_layer_imports_nothing_else_of_the_package():
    leaks = [f"{a} imports {b}" for a, b, _ in imports() if layer_of(a) == "base" and layer_of(b) != "base"]
    assert not leaks, leaks


# --- architecture facts live in families/ ---------------------------------------------------------

# what must not appear outside compare/families/ in the analyses, the UI, reproduce and study
FAMILY_NAMES = "|".join(families.FAMILIES)
ARCHITECTURE = {
    "family ==": re.compile(r"\bfamily\s*==|==\s*[\w.]*family\b"),
    ".mixing": re.compile(r"\.mixing\b"),
    "a model module path": re.compile(r"""["'.](?:mixer|attn|attention)\.\w"""),
    "a dictionary keyed by family": re.compile(rf"""[{{,]\s*["'](?:{FAMILY_NAMES})["']\s*:"""),
    # a layer's kind is asked of the adapter (`Family.knockout_hooks`, `hidden_attention_refusal`, ...), never tested
    "a branch on a layer's kind": re.compile(r"\.mixes\("),
    "a kind compared": re.compile(r"""["'](?:attention|ssm)(?:\+ssm)?["']\s*(?:==|!=|\bin\b)"""
                                  r"""|(?:==|!=|\bin\b)\s*[(\[{]?\s*["'](?:attention|ssm)(?:\+ssm)?["']"""
                                  r"""|layer_kind\([^)]*\)\s*(?:==|!=|\.split)"""),
}
SCANNED = ("compare/analyses", "compare/reproduce", "compare/study", "ui")
# names that read like families but are not architecture facts: (file, the line's opening) -> why
NOT_ARCHITECTURE = {
    ("compare/reproduce/errata.py", "caption = {"): "keyed by tokenizer (GPT-2's, GPT-NeoX-20B's), as Fig. 12 is",
    ("compare/reproduce/errata.py", "found = {"): "keyed by tokenizer",
    ("compare/reproduce/errata.py", "swapped = single == {"): "keyed by tokenizer",
    ("ui/models.py", "DEFAULTS = {"): "the app's configured pair by role (MAMBA_MODEL, GPT2_MODEL)",
    ("ui/models.py", "ENV_VARS = {"): "the app's configured pair by role",
}


@pytest.mark.parametrize("line", [
    'if arch.mixes(handle.module, layer, "ssm"):',
    'if kind == "attention":',
    'if handle.layer_kind(l) != "ssm":',
    'ssm = "ssm" in kind.split("+")',
    'if kind in ("attention", "attention+ssm"):',
    'attends = handle.layer_kind(layer).split("+")',
])
def test_the_grep_catches_kind_branches(line):
    """The patterns find the branches the analyses had before they asked the adapter."""
    assert any(pattern.search(line) for pattern in ARCHITECTURE.values()), line


def test_no_architecture_knowledge_outside_families():
    found = [f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}"
             for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             for what, pattern in ARCHITECTURE.items() if pattern.search(line)
             and not any((str(path.relative_to(ROOT)), line.strip()[:len(start)]) == (file, start)
                         for file, start in NOT_ARCHITECTURE)]
    assert not found, ("architecture facts outside compare/families/ (ask the family: Model.arch, its Points, "
                       "the adapter's methods):\n" + "\n".join(found))


# --- the dataset generator sits above the engine --------------------------------------------------

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
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
