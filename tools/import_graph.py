"""Print the import arrows between the project's packages, between raysweep's subpackages, and between
raysweep's modules; ``--check`` exits 1 on an arrow the layering forbids or on an import cycle.

    python tools/import_graph.py            # package arrows, raysweep's subpackage arrows, its module arrows
    python tools/import_graph.py --check    # exit 1 if an arrow points the wrong way or modules form a cycle

Imports are read from the source (``ast``), function-level ones and those under ``if TYPE_CHECKING:``
included, so neither a lazy import nor a type hint can hide an arrow. The rules (docs/architecture.md):

- packages: raysweep -> search_spaces / trainables / analysis; search_spaces -> trainables; trainables and
  analysis import none of the others;
- inside raysweep, each subpackage imports only the layers below it (:data:`LAYERS`): the leaves (paths,
  trials, text) at the bottom; search and tracking above them; spec; planning and reporting; execution;
  the CLI and the public ``raysweep`` package on top;
- no import cycle among raysweep's modules.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("raysweep", "search_spaces", "trainables", "analysis")
ALLOWED = {"raysweep": {"search_spaces", "trainables", "analysis"}, "search_spaces": {"trainables"},
           "trainables": set(), "analysis": set()}
# raysweep's layers: each unit (a subpackage, or a top-level module) -> the units it may import.
LEAVES = {"paths", "trials", "text", "environment", "_exports"}
LAYERS: dict[str, set[str]] = {
    **{leaf: set() for leaf in LEAVES},
    "search": LEAVES,
    "tracking": LEAVES,
    "spec": LEAVES | {"search", "tracking"},
    "planning": LEAVES | {"search", "spec"},
    "reporting": LEAVES | {"search", "tracking"},
    "execution": LEAVES | {"search", "tracking", "spec", "planning", "reporting"},
}
TOP = {"cli", ""}  # raysweep.cli and raysweep/__init__.py (the public API) may import every layer


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as a.b, or a.b.c if that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (names that are not modules fold into their module)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = set()
        for target in imports(path):
            while target not in files and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in files and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def package_arrows(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a.split(".")[0], b.split(".")[0]) for a, targets in edges.items() for b in targets
            if a.split(".")[0] != b.split(".")[0]}


def wrong_arrows(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if a.split(".")[0] != b.split(".")[0] and b.split(".")[0] not in ALLOWED[a.split(".")[0]])


def unit(module: str) -> str | None:
    """The layer unit of a raysweep module (``raysweep.tracking.sync`` -> ``tracking``; ``raysweep`` -> "")."""
    if module != "raysweep" and not module.startswith("raysweep."):
        return None
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def unit_arrows(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importing unit, imported unit) for every arrow between two different units of raysweep."""
    return {(unit(a), unit(b)) for a, targets in edges.items() for b in targets
            if unit(a) is not None and unit(b) is not None and unit(a) != unit(b)}


def wrong_layers(edges: dict[str, set[str]]) -> list[str]:
    """Module arrows from one raysweep unit to another that :data:`LAYERS` does not allow."""
    out = []
    for a, targets in edges.items():
        for b in targets:
            ua, ub = unit(a), unit(b)
            if ua is None or ub is None or ua == ub or ua in TOP:
                continue
            if ub in TOP or ub not in LAYERS.get(ua, set()):
                out.append(f"{a} -> {b}")
    return sorted(out)


def cycles(edges: dict[str, set[str]], package: str = "raysweep") -> list[list[str]]:
    """Import cycles among one package's modules (each reported once, as a path back to its start)."""
    inner = {a: {b for b in t if b.startswith(package + ".")} for a, t in edges.items() if a.startswith(package + ".")}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(inner.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(inner):
        if start not in state:
            visit(start, [start])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on a wrong arrow or a cycle")
    args = parser.parse_args()
    edges = graph()
    print("packages:")
    for a, b in sorted(package_arrows(edges)):
        print(f"  {a} -> {b}")
    print("raysweep subpackages (a leaf module counts as its own unit):")
    for a, b in sorted(unit_arrows(edges)):
        print(f"  {a or 'raysweep'} -> {b or 'raysweep'}")
    print("raysweep modules:")
    for a in sorted(m for m in edges if m.startswith("raysweep.")):
        inner = sorted(b.removeprefix("raysweep.") for b in edges[a] if b.startswith("raysweep."))
        print(f"  {a.removeprefix('raysweep.')} -> {', '.join(inner) or '(none)'}")
    problems = wrong_arrows(edges) + wrong_layers(edges) + [" -> ".join(c) for c in cycles(edges)]
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
