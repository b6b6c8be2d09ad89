"""The layering docs/architecture.md promises, checked on the source: imports point one way between the packages
(raysweep -> search_spaces / trainables / analysis; search_spaces -> trainables), raysweep's subpackages import only
the layers below them (type-only imports included), and raysweep's modules form no import cycle.
`python tools/import_graph.py` prints the arrows."""

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
    edges = {"trainables.loop": {"raysweep.spec.schema"}, "raysweep.a": {"raysweep.b"}, "raysweep.b": {"raysweep.a"}}
    assert import_graph.wrong_arrows(edges) == ["trainables.loop -> raysweep.spec.schema"]
    assert import_graph.cycles(edges) == [["raysweep.a", "raysweep.b", "raysweep.a"]]


def test_raysweep_subpackages_import_only_the_layers_below_them():
    edges = import_graph.graph()
    assert import_graph.wrong_layers(edges) == []
    assert ("execution", "planning") in import_graph.unit_arrows(edges)  # the subpackages are really read


def test_the_checker_finds_an_upward_arrow_between_subpackages_even_for_type_hints(tmp_path):
    edges = {"raysweep.search.modes": {"raysweep.spec.schema"},
             "raysweep.planning.plan": {"raysweep.execution.cluster"},
             "raysweep.cli": {"raysweep.execution.runner"},
             "raysweep.execution.runner": {"raysweep.planning.plan"}}
    assert import_graph.wrong_layers(edges) == ["raysweep.planning.plan -> raysweep.execution.cluster",
                                                "raysweep.search.modes -> raysweep.spec.schema"]
    hinted = tmp_path / "hinted.py"
    hinted.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from raysweep.spec.schema import Spec\n")
    assert "raysweep.spec.schema" in import_graph.imports(hinted)


def test_discovery_imports_only_modules_that_register(tmp_path, monkeypatch):
    import sys

    import pytest

    from trainables.registry import Registry, discover

    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from trainables.registry import Registry\nTHINGS = Registry('thing')\n")
    (pkg / "entry.py").write_text("from fakepkg import THINGS\nfrom fakepkg import shared\n"
                                  "class A:\n    name, description = 'a', 'an entry'\nTHINGS.add(A)\n")
    (pkg / "shared.py").write_text("VALUE = 1\n")
    (pkg / "stray.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakepkg

    assert isinstance(fakepkg.THINGS, Registry)
    with pytest.raises(RuntimeError, match="fakepkg.stray registers nothing"):
        discover("fakepkg", fakepkg.__path__, helpers=("shared",))
    assert "fakepkg.entry" in sys.modules and fakepkg.THINGS.names() == ["a"]
    for name in [m for m in sys.modules if m.startswith("fakepkg")]:
        monkeypatch.delitem(sys.modules, name)
