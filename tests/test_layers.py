"""The house rules of the source tree, checked with the standard library only (``ast``).

* No import loop among ``ltprune`` modules, counting imports written anywhere in a file (a loop
  dodged by an import inside a function is still a loop: it only fails later, at call time).
  Importing ``ltprune.a.b`` runs ``ltprune/a/__init__.py`` too, so that is an edge as well;
  ``ltprune/__init__.py`` is left out because its names load lazily (PEP 562).
* Imports sit at the top of a file. The exceptions are listed in ``INNER_IMPORTS`` with their
  reason; a new one has to be added there, with its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ltprune"
ROOT = "ltprune"

#: Imports allowed inside a function: optional or platform dependencies, and the lazy loading
#: that keeps ``ltprune`` --help and the checks of command-line input free of torch
#: (tests/test_runs.py::test_bad_input_is_refused_before_torch_is_imported).
OPTIONAL = {
    "matplotlib": "plots are an extra (pip install ltprune[plots]); nothing else needs it",
    "matplotlib.pyplot": "as matplotlib",
    "scipy.stats": "only the length and per-example statistics use it",
    "torch.nn.attention.varlen": "exists only in recent torch builds (the packed varlen kernel)",
    "torch.ao.quantization": "imported inside a warnings filter: it warns at import that it is deprecated",
    "torch.ao.quantization.observer": "as torch.ao.quantization",
    "fcntl": "POSIX only (the run-folder lock)",
    "sentence_transformers": "the embedding task's extra (pip install ltprune[embedding]); a clear error without it",
}
#: The command line (argparse lives there only) imports the library module a command runs when
#: the command runs, after checking its input: ``--help`` and a typo cost no torch import.
CLI = "ltprune.cli"
#: Parts of the tree whose imports inside functions are left as they are, with the reason.
LOCAL = {
    "ltprune.models": "the adapters import a family's transformers modules (and output classes) where they use "
                      "them; models/ belongs to the adapter work, which this check does not reshape",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(module: str, node: ast.AST, is_package: bool) -> list[str]:
    """The absolute names an import statement loads (``from x import y`` may load ``x.y``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]


def _imports(module: str, path: Path):
    """(target, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, child.lineno, in_function) for t in _targets(module, child, is_package))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _own(target: str) -> str | None:
    """The ``ltprune`` module a dotted name lives in (None: another library)."""
    if target != ROOT and not target.startswith(ROOT + "."):
        return None
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(module, path):
            own = _own(target)
            while own and own != ROOT:  # importing a.b.c runs a/__init__ and a/b/__init__ first
                if own != module and not module.startswith(own + "."):  # (a package's own parts: no loop)
                    graph[module].add(own)
                own = own.rsplit(".", 1)[0] if "." in own else None
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Modules by floor: each imports only from floors below its own."""
    floor: dict[str, int] = {}

    def height(node):
        if node not in floor:
            floor[node] = 1 + max((height(n) for n in graph[node]), default=-1)
        return floor[node]

    for node in graph:
        height(node)
    return [sorted(m for m, f in floor.items() if f == level) for level in range(max(floor.values()) + 1)]


def test_the_checker_finds_a_loop():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_loop():
    graph = _graph()
    assert len(graph) > 30  # the walk found the package
    cycle = _cycle(graph)
    assert cycle is None, "import loop: " + " -> ".join(cycle)
    assert layers(graph)  # and so the modules stack into floors


def test_imports_at_the_top():
    inside = []
    for module, path in MODULES.items():
        if module == CLI or module.startswith(CLI + "."):
            continue
        for target, line, in_function in _imports(module, path):
            local = any(module == prefix or module.startswith(prefix + ".") for prefix in LOCAL)
            if in_function and target not in OPTIONAL and not local:
                inside.append(f"{path.relative_to(SRC.parent)}:{line}: {target}")
    assert not inside, "imports inside functions (move them to the top, or list them with a reason):\n" + \
        "\n".join(inside)


def test_the_exceptions_are_still_needed():
    assert CLI in MODULES
    used = {target for module, path in MODULES.items() for target, _, inner in _imports(module, path) if inner}
    assert set(OPTIONAL) <= used, f"no longer imported inside a function: {sorted(set(OPTIONAL) - used)}"


def test_argparse_lives_in_the_cli_only():
    """The library takes dataclasses and keyword arguments; parsing the command line is the CLI's."""
    found = []
    for module, path in MODULES.items():
        if module == CLI or module.startswith(CLI + "."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            imports_argparse = isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                t.split(".")[0] == "argparse" for t in _targets(module, node, path.name == "__init__.py"))
            adds = isinstance(node, ast.Attribute) and node.attr in ("add_argument", "add_parser", "add_subparsers")
            if imports_argparse or adds:
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert not found, "argparse outside ltprune/cli: " + ", ".join(found)
