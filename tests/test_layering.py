"""The layering DESIGN.md promises, checked on the source: imports point one way between the packages
(raysweep -> search_spaces / trainables / analysis; search_spaces -> trainables), and raysweep's own
modules form no import cycle. `python tools/import_graph.py` prints the arrows."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def test_imports_point_one_way_between_packages():
    edges = import_graph.graph()
    assert import_graph.wrong_arrows(edges) == []
    assert ("raysweep", "trainables") in import_graph.package_arrows(edges)  # the graph is really read


def test_raysweep_modules_form_no_import_cycle():
    assert import_graph.cycles(import_graph.graph()) == []


def test_the_checker_finds_a_wrong_arrow_and_a_cycle():
    edges = {"trainables.loop": {"raysweep.spec"}, "raysweep.a": {"raysweep.b"}, "raysweep.b": {"raysweep.a"}}
    assert import_graph.wrong_arrows(edges) == ["trainables.loop -> raysweep.spec"]
    assert import_graph.cycles(edges) == [["raysweep.a", "raysweep.b", "raysweep.a"]]
