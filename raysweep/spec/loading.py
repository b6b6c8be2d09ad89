"""Reading a sweep spec: strict, bounded YAML for spec files and ``--set`` values (``yaml.safe_load``
semantics, minus its traps), and :func:`apply_overrides`.

PyYAML's ``safe_load`` silently keeps the last of two equal keys (a second ``train:`` block wins), expands
aliases without limit when the result is serialised (a 527-byte "billion laughs" document becomes a 20 MB
manifest), recurses once per nesting level (20,000 ``[`` end in RecursionError) and raises
UnicodeDecodeError on a binary file. This loader refuses each of those with a one-line ConfigError:

- a duplicate mapping key anywhere, named by its dotted path (``train``, ``methods.focal``,
  ``methods.cdb_w_ce[1].tau``); keys brought in by a merge key (``<<: *base``) may be overridden, as
  YAML intends;
- more than :data:`MAX_DEPTH` nested collections, counted while composing (before Python recursion can
  overflow) and again with aliases expanded;
- an alias expansion beyond :data:`MAX_NODES` nodes or :data:`MAX_CHARS` scalar characters, or an alias
  that contains itself. Aliases are bounded rather than refused: anchors and merge keys are a fair way to
  share a block of settings between methods, and PyYAML builds an alias as a shared object, so the cost
  appears only where the spec is expanded (the manifest, the MLflow spec artifact);
- a spec file larger than :data:`MAX_SPEC_BYTES`, not UTF-8, or containing NUL bytes.

Everything else (tags, scalars, merge keys, one document) behaves exactly as ``yaml.safe_load``.
"""

from __future__ import annotations

import codecs
import copy
from pathlib import Path
from typing import Any, Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trainables.params import ConfigError

MAX_SPEC_BYTES = 1_000_000  # the largest bundled preset is about 2 KB
MAX_DEPTH = 64  # a spec nests about 5 deep (methods.NAME[i].KNOB: [values])
MAX_NODES = 100_000  # after expanding aliases: a thousand-configuration grid written out is ~10,000
MAX_CHARS = 4_000_000  # scalar characters after expanding aliases (4x the file bound)
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader (pure Python, so composition can be bounded) that stops composing past MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1}, "
                               f"column {mark.column + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(Exception):
    """Internal: a bound was exceeded; becomes a ConfigError naming the caller's field."""


class _Duplicate(_Refused):
    """Internal: a duplicate key, named by its own dotted path rather than by the caller's field."""

    def __init__(self, path: str, first: yaml.Mark, again: yaml.Mark) -> None:
        self.path = path
        where = (f"line {first.line + 1}, columns {first.column + 1} and {again.column + 1}"
                 if first.line == again.line else f"lines {first.line + 1} and {again.line + 1}")
        self.message = f"duplicate key ({where}); YAML would silently keep only the last"
        super().__init__(f"{path}: {self.message}")


def load_yaml_text(text: str, where: str, root: str = "") -> Any:
    """Parse one YAML document like ``yaml.safe_load``, refusing what the module docstring lists.

    ``where`` names the field in errors about the document as a whole (``spec``, or the key of a
    ``--set`` override); ``root`` is the dotted path of the document itself, prefixed to the path of a
    duplicate key (empty for a spec file, the override's key for a ``--set`` value).
    """
    if "\x00" in text:
        raise ConfigError(where, f"contains a NUL character at offset {text.index(chr(0))}: binary data, not YAML text")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        _check_duplicates(loader, node, root)
        return loader.construct_document(node)
    except _Duplicate as err:
        raise ConfigError(err.path, err.message) from None
    except _Refused as err:
        raise ConfigError(where, str(err)) from None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(where, f"not valid YAML: {_one_line(err)}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
        # ValueError: e.g. an integer of more than 4300 digits or an impossible date
        raise ConfigError(where, f"not valid YAML: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a spec file with :func:`load_yaml_text`: a bounded-size UTF-8 text file holding one mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("spec", f"file not found: {path}")
    if path.is_dir():
        raise ConfigError("spec", f"{path} is a folder, not a spec file")
    if not path.is_file():
        raise ConfigError("spec", f"{path} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise ConfigError("spec", f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise ConfigError("spec", f"{path} is larger than {MAX_SPEC_BYTES:,} bytes; a spec is a short YAML file")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = bom + err.start
        raise ConfigError("spec", f"{path} is not a UTF-8 text file (byte 0x{data[offset]:02x} at offset "
                                  f"{offset}); a spec is YAML text") from None
    raw = load_yaml_text(text, "spec")
    if not isinstance(raw, dict):
        raise ConfigError("spec", "must be a YAML mapping of sections (name, dataset, model, methods, ...)")
    return raw


def _one_line(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = err.problem or err.context or "invalid YAML"
    context = f" ({err.context})" if err.problem and err.context else ""
    return " ".join(f"{problem}{where}{context}".split())


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Nodes, scalar characters and depth of ``root`` with every alias expanded, within the bounds.

    Iterative and memoised per node, so it costs the size of the composed graph (not of the expansion)
    and no Python recursion; a node reached again while it is being expanded is a recursive alias.
    """
    done: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, chars, depth) when expanded
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            kids = [done[id(k)] for k in _children(node)]
            nodes = 1 + sum(k[0] for k in kids)
            chars = (len(node.value) if isinstance(node, ScalarNode) else 0) + sum(k[1] for k in kids)
            depth = (0 if isinstance(node, ScalarNode) else 1) + max((k[2] for k in kids), default=0)
            if nodes > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES:,} values through YAML aliases (line "
                               f"{node.start_mark.line + 1}); write the values out or use fewer aliases")
            if chars > MAX_CHARS:
                raise _Refused(f"expands to more than {MAX_CHARS:,} characters through YAML aliases (line "
                               f"{node.start_mark.line + 1})")
            if depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded (line "
                               f"{node.start_mark.line + 1})")
            done[key] = (nodes, chars, depth)
            continue
        if key in done:
            continue
        if key in open_:
            raise _Refused(f"a YAML alias contains itself (line {node.start_mark.line + 1}); aliases must not recurse")
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_children(node)))


def _check_duplicates(loader: _Loader, node: Node, path: str, seen: set[int] | None = None) -> None:
    """Refuse a mapping that gives one key twice (merge-key entries aside), naming its dotted path.

    Runs after :func:`_check_expansion`, so the recursion is at most MAX_DEPTH deep; each node is
    checked once (the first path that reaches an aliased node names it).
    """
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, SequenceNode):
        for i, child in enumerate(node.value):
            _check_duplicates(loader, child, f"{path}[{i}]", seen)
        return
    if not isinstance(node, MappingNode):
        return
    first_at: dict[Any, yaml.Mark] = {}
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        child_path = path
        if isinstance(key_node, ScalarNode):
            key = loader.construct_object(key_node)
            child_path = f"{path}.{key}" if path else str(key)
            try:
                first = first_at.get(key)
                first_at.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the constructor refuses it with its own message
                first = None
            if first is not None:
                raise _Duplicate(child_path, first, key_node.start_mark)
        _check_duplicates(loader, value_node, child_path, seen)


AXES_SECTION = "axes"


def apply_overrides(spec: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``spec``."""
    out = copy.deepcopy(dict(spec))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected key.path=value, got {item!r}")
        value = load_yaml_text(text, key, root=key)
        node = out
        parts = key.split(".")
        if parts[0] == AXES_SECTION and len(parts) > 2:  # an axis is named by a dotted key: one entry of axes
            parts = [AXES_SECTION, ".".join(parts[1:])]
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and part == "model":
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), f"is {child!r}, not a section; cannot set {key}")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out
