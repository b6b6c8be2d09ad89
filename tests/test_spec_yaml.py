"""The strict, bounded YAML loader for spec files and --set values (issue 15, items 6, 8 and 10)."""

import datetime

import pytest
import yaml

from raysweep.spec import loading as spec_yaml
from raysweep.spec.loading import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES, load_spec_file, load_yaml_text
from trainables.params import ConfigError


def refused(text, where="spec", root=""):
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, where, root)
    return info.value


# ---- duplicate keys ------------------------------------------------------------------------------------
def test_a_second_train_block_is_refused_naming_train():
    err = refused("name: a\ntrain: {epochs: 2}\nmethods: {ce: {}}\ntrain: {epochs: 50}\n")
    assert err.path == "train"
    assert "duplicate key" in err.message and "lines 2 and 4" in err.message


def test_the_same_method_twice_is_refused_naming_methods_focal():
    err = refused("methods: {focal: {gamma: 1}, focal: {gamma: 3}}")
    assert err.path == "methods.focal"
    assert "columns" in err.message  # both on line 1: the columns tell them apart


def test_a_duplicate_deep_in_a_list_of_blocks_names_its_index():
    err = refused("methods:\n  cdb_w_ce:\n  - {tau: 1}\n  - {tau: 2, eps: 0.1, tau: 3}\n")
    assert err.path == "methods.cdb_w_ce[1].tau"


def test_keys_equal_as_python_values_are_duplicates():
    # safe_load turns both into the int key 1 and keeps only 'b'
    assert refused("{1: a, 1.0: b}").path == "1.0"
    assert refused("seeds: 1\n? seeds\n: 2\n").path == "seeds"


def test_merge_keys_may_be_overridden_as_yaml_intends():
    text = "base: &b {lr: 0.1, weight_decay: 0.0005}\ntrain: {<<: *b, lr: 0.3}\n"
    assert load_yaml_text(text, "spec") == yaml.safe_load(text) == {
        "base": {"lr": 0.1, "weight_decay": 0.0005}, "train": {"lr": 0.3, "weight_decay": 0.0005}}


def test_a_duplicate_in_a_set_value_is_named_under_its_key():
    err = refused("{epochs: 2, epochs: 3}", where="train", root="train")
    assert err.path == "train.epochs"


def test_distinct_keys_that_look_alike_pass():
    assert load_yaml_text("{a: 1, A: 2, 'a ': 3}", "spec") == {"a": 1, "A": 2, "a ": 3}


# ---- nesting and alias expansion --------------------------------------------------------------------------
def test_twenty_thousand_nested_brackets_are_a_clean_error():
    err = refused("[" * 20_000)
    assert err.path == "spec" and f"more than {MAX_DEPTH} levels" in err.message


def test_nesting_up_to_the_bound_loads():
    depth = MAX_DEPTH
    value = load_yaml_text("[" * depth + "]" * depth, "spec")
    for _ in range(depth - 1):
        value = value[0]
    assert value == []
    assert refused("[" * (depth + 1) + "]" * (depth + 1)).path == "spec"


def test_block_style_nesting_is_bounded_too():
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * (MAX_DEPTH + 5) + "x: 1\n"
    assert "levels deep" in refused(text).message


def billion_laughs(levels: int, width: int = 10) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"description: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_tree_with_a_million_leaves_is_refused():
    text = billion_laughs(6)  # 10^6 leaves from about 300 bytes
    assert len(text) < 600
    err = refused(text)
    assert err.path == "spec" and f"more than {MAX_NODES:,} values" in err.message


def test_aliases_that_expand_to_little_are_fine():
    text = billion_laughs(3)  # 1000 leaves
    assert load_yaml_text(text, "spec") == yaml.safe_load(text)


def test_an_alias_of_a_long_string_repeated_is_refused_by_characters():
    text = f"s: &s {'x' * 200_000}\nmany: [{', '.join(['*s'] * 40)}]\n"
    assert "characters" in refused(text).message


def test_a_recursive_alias_is_refused():
    assert "contains itself" in refused("a: &a [1, *a]").message
    assert "contains itself" in refused("a: &a {b: *a}").message


def test_deep_expansion_through_a_chain_of_aliases_is_refused_without_recursion_error():
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 2000)]
    assert "once its aliases are expanded" in refused("\n".join(lines)).message


# ---- everything else is safe_load ----------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "a: 1\nb: [1, 2.5, 'x', null, true]\n", "x: 2001-12-14\n", "x: !!binary aGVsbG8=\n", "", "# only a comment\n",
    "- 1\n- 2\n", "x: 1e3\ny: .inf\n", "x: 0x1f\n", "x: ~\n",
])
def test_same_result_as_safe_load(text):
    assert load_yaml_text(text, "spec") == yaml.safe_load(text)


def test_dates_and_bytes_keep_their_types():
    value = load_yaml_text("d: 2001-12-14\nb: !!binary aGVsbG8=\n", "spec")
    assert value == {"d": datetime.date(2001, 12, 14), "b": b"hello"}


@pytest.mark.parametrize("text, words", [
    ("a: b: c", "mapping values are not allowed here at line 1"),
    ("a: !!python/object:os.system x", "could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
    ("a: *nowhere", "undefined alias"),
    ("x: 1" + "0" * 5000, "4300 digits"),
    ("a: [1, 2", "expected ',' or ']'"),
])
def test_invalid_yaml_is_one_line_naming_the_field(text, words):
    err = refused(text, where="methods.ce", root="methods.ce")
    assert err.path == "methods.ce" and words in str(err) and "\n" not in str(err)


def test_a_nul_character_is_binary_data():
    assert "NUL" in refused("a: b\x00c").message


# ---- spec files ------------------------------------------------------------------------------------------
def test_a_spec_file_loads_as_a_mapping(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: ok\nmethods: {ce: {}}\n")
    assert load_spec_file(path) == {"name": "ok", "methods": {"ce": {}}}


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: ok\n")
    assert load_spec_file(path) == {"name": "ok"}
    path.write_bytes(b"\xef\xbb\xbfname: \xff\n")
    assert "byte 0xff at offset 9" in pytest.raises(ConfigError, load_spec_file, path).value.message


def test_a_binary_file_is_one_line_not_a_unicode_decode_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")
    with pytest.raises(ConfigError) as info:
        load_spec_file(path)
    assert info.value.path == "spec" and "not a UTF-8 text file" in info.value.message
    assert "0x80 at offset 0" in info.value.message and "\n" not in str(info.value)


def test_a_utf8_file_with_nul_bytes_is_binary(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: a\x00\x00\x00")
    assert "NUL" in pytest.raises(ConfigError, load_spec_file, path).value.message


def test_a_file_above_the_size_bound_is_refused_without_parsing(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" + "# padding\n" * (MAX_SPEC_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as info:
        load_spec_file(path)
    assert f"larger than {MAX_SPEC_BYTES:,} bytes" in info.value.message

    def no_parse(*args):  # the bound is checked on the bytes, before YAML sees them
        raise AssertionError("parsed")

    monkeypatch.setattr(spec_yaml, "load_yaml_text", no_parse)
    with pytest.raises(ConfigError):
        load_spec_file(path)


@pytest.mark.parametrize("content, words", [("- a\n- b\n", "must be a YAML mapping"), ("", "must be a YAML mapping"),
                                            ("just text\n", "must be a YAML mapping")])
def test_a_spec_that_is_not_a_mapping_is_refused(tmp_path, content, words):
    path = tmp_path / "s.yaml"
    path.write_text(content)
    assert words in pytest.raises(ConfigError, load_spec_file, path).value.message


def test_missing_files_folders_and_devices_are_named(tmp_path):
    assert "file not found" in pytest.raises(ConfigError, load_spec_file, tmp_path / "nope.yaml").value.message
    assert "is a folder" in pytest.raises(ConfigError, load_spec_file, tmp_path).value.message
    assert "not a regular file" in pytest.raises(ConfigError, load_spec_file, "/dev/zero").value.message


def test_every_bundled_spec_loads_as_safe_load_does():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    presets = sorted((root / "search_spaces" / "presets").glob("*.yaml"))
    files = [*presets, root / "raysweep" / "specs" / "quickstart.yaml"]
    assert len(files) > 10
    for path in files:
        assert load_spec_file(path) == yaml.safe_load(path.read_text()), path
