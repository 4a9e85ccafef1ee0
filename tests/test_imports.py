"""The package's import graph has no cycle (function-level imports included)."""

import ast
import os

import networkx as nx

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "p2pfl")


def _modules() -> dict:
    """``{dotted module name: path}`` of every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".c"):  # a C extension's source: the module it builds
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))
                out[rel[:-2].replace(os.sep, ".")] = os.path.join(folder, f)
            elif f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))
                name = rel[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = \
                    os.path.join(folder, f)
    return out


def _targets(node, module: str, is_package: bool, known: set) -> list:
    """Modules of the package that an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    found = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in known]
    if len(found) < len(node.names) and stem in known:
        found.append(stem)  # names defined in the module (or package) itself
    return found


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        if not path.endswith(".py"):
            continue
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.endswith("__init__.py"), set(mods)):
                    if target != name:
                        g.add_edge(name, target)
    return g


def test_the_import_graph_sees_the_package():
    g = import_graph()
    assert g.has_edge("p2pfl.api", "p2pfl.plan")
    assert g.has_edge("p2pfl.compression._cabac_pure", "p2pfl.compression._cabac_model")
    assert g.number_of_nodes() > 50


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
