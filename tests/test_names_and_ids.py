"""Names that become folders, collision-free sweep ids and manifests found by id or path (issue 15, items
1, 2, 8 and 9)."""

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from raysweep.paths import (
    COMPONENT_MAX_BYTES,
    CONFIRM_SUFFIX,
    LONGEST_ID_SUFFIX,
    MAX_CLAIMS,
    MAX_NAME_BYTES,
    check_name,
    contained,
)
from raysweep.tracking.manifest import MANIFEST, Manifest, claim_sweep_dir
from trainables.params import ConfigError

NOON = time.mktime((2026, 12, 1, 18, 49, 3, 0, 0, -1))  # local time 2026-12-01 18:49:03


# ---- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["k9", "cdb_tau-x.imbalance", "a" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2),
                                  "My Experiment", "x..y"])
def test_ordinary_names_pass(name):
    assert check_name(name, "name") == name


@pytest.mark.parametrize("name, words", [
    ("..", "must not be '..'"), (".", "must not be '.'"), (".hidden", "must not start with '.'"),
    ("../../escape_exp", "must not start with '.'"), ("a/../../b", "path separator (/)"), ("a\\b", "path separator"),
    ("sub/dir", "path separator (/)"), ("a\x00b", "control characters"), ("a\nb", "control characters"),
    ("", "non-empty string"), (None, "non-empty string"), (3, "non-empty string"),
    ("n" * 300, "is 300 bytes long; at most 227 bytes"), ("é" * 114, "is 228 bytes long"),
])
def test_names_that_steer_paths_are_refused(name, words):
    with pytest.raises(ConfigError) as info:
        check_name(name, "tracking.experiment")
    assert info.value.path == "tracking.experiment" and words in info.value.message


def test_the_name_bound_leaves_room_for_the_longest_sweep_folder(tmp_path):
    assert MAX_NAME_BYTES == COMPONENT_MAX_BYTES - len(LONGEST_ID_SUFFIX) == 227
    longest = "n" * MAX_NAME_BYTES + LONGEST_ID_SUFFIX
    assert len(longest.encode()) == COMPONENT_MAX_BYTES
    (tmp_path / longest).mkdir()  # the file system takes it
    with pytest.raises(OSError):  # and one byte more is what fails deep inside Ray or MLflow
        (tmp_path / (longest + "x")).mkdir()


def test_contained_accepts_paths_inside_and_refuses_escapes(tmp_path):
    root = tmp_path / "mlartifacts"
    root.mkdir()
    assert contained(root, root / "exp", "tracking.experiment") == (root / "exp").resolve()
    assert contained(root, "exp/sub", "tracking.experiment") == (root / "exp" / "sub").resolve()
    assert contained(root, root, "x") == root.resolve()
    for escape in (root / ".." / ".." / "escape_exp", "../x", tmp_path / "mlartifacts-other", "/etc"):
        with pytest.raises(ConfigError) as info:
            contained(root, escape, "tracking.experiment")
        assert info.value.path == "tracking.experiment" and "outside" in info.value.message


def test_contained_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError):
        contained(root, root / "link" / "x", "storage")


# ---- sweep ids -----------------------------------------------------------------------------------------
def test_two_claims_in_the_same_second_get_two_folders(tmp_path):
    first = claim_sweep_dir(tmp_path / "results", "k9", now=NOON)
    second = claim_sweep_dir(tmp_path / "results", "k9", now=NOON)
    assert first == ("k9-20261201-184903", (tmp_path / "results" / "k9-20261201-184903").resolve())
    assert second == ("k9-20261201-184903-2", (tmp_path / "results" / "k9-20261201-184903-2").resolve())
    assert first[1].is_dir() and second[1].is_dir() and first[1].is_absolute()


def test_a_claimed_id_never_ends_like_a_phase_2_folder(tmp_path):
    ids = [claim_sweep_dir(tmp_path, "a", now=NOON)[0] for _ in range(3)]
    assert not any(i.endswith(CONFIRM_SUFFIX) for i in ids)
    assert len(set(ids)) == 3


def test_claims_run_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("raysweep.tracking.manifest.MAX_CLAIMS", 3)
    for _ in range(3):
        claim_sweep_dir(tmp_path, "a", now=NOON)
    with pytest.raises(ConfigError) as info:
        claim_sweep_dir(tmp_path, "a", now=NOON)
    assert info.value.path == "storage" and "same second" in info.value.message
    assert MAX_CLAIMS == 999


def test_a_bad_name_claims_nothing(tmp_path):
    with pytest.raises(ConfigError):
        claim_sweep_dir(tmp_path / "results", "..")
    assert not (tmp_path / "results").exists()


def test_an_unwritable_storage_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        claim_sweep_dir(tmp_path / "file" / "results", "a")
    assert info.value.path == "storage"


def test_concurrent_threads_claim_distinct_folders(tmp_path):
    barrier, out = threading.Barrier(8), []

    def claim():
        barrier.wait(timeout=30)
        out.append(claim_sweep_dir(tmp_path, "k9", now=NOON))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == 8 and len({i for i, _ in out}) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(i for i, _ in out)


def _claim_in_process(storage, barrier, queue):
    barrier.wait(timeout=60)
    queue.put(claim_sweep_dir(storage, "k9", now=NOON)[0])


@pytest.mark.process
def test_concurrent_processes_claim_distinct_folders(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(tmp_path, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(ids) == ["k9-20261201-184903", "k9-20261201-184903-2", "k9-20261201-184903-3",
                           "k9-20261201-184903-4"]


# ---- manifests by id, relative and absolute path ---------------------------------------------------------
@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A manifest in tmp/raysweep_results/k9-20261201-184903, with tmp as the working directory."""
    monkeypatch.chdir(tmp_path)
    sweep_id, folder = claim_sweep_dir("raysweep_results", "k9", now=NOON)
    Manifest.new(folder, sweep_id=sweep_id, spec={}, tracking_uri="sqlite:///x.db", experiment="k9",
                 parent_tags={}).save()
    return sweep_id, folder


@pytest.mark.parametrize("form", ["id", "relative", "relative/", "./relative", "absolute", "manifest"])
def test_find_accepts_every_documented_form_and_hands_out_absolute_paths(sweep, form):
    sweep_id, folder = sweep
    arg = {"id": sweep_id, "relative": f"raysweep_results/{sweep_id}", "relative/": f"raysweep_results/{sweep_id}/",
           "./relative": f"./raysweep_results/{sweep_id}", "absolute": str(folder),
           "manifest": f"raysweep_results/{sweep_id}/{MANIFEST}"}[form]
    manifest = Manifest.find(arg)
    assert manifest.path == folder / MANIFEST
    assert manifest.sweep_dir.is_absolute() and manifest.storage_root.is_absolute()
    assert manifest.storage_root == folder.parent
    assert manifest.data["sweep_id"] == sweep_id


def test_the_crash_of_the_issue_does_not_happen_with_what_find_hands_out(sweep):
    """Ray's restore check takes a relative path for a URI ('URI has empty scheme'); an absolute one is fine."""
    from ray import tune

    sweep_id, _ = sweep
    manifest = Manifest.find(f"raysweep_results/{sweep_id}")
    assert tune.Tuner.can_restore(str(manifest.storage_root / sweep_id)) is False  # no Ray state: False, no crash


def test_find_by_id_under_another_storage(sweep, tmp_path):
    sweep_id, folder = sweep
    os.rename(tmp_path / "raysweep_results", tmp_path / "elsewhere")
    assert Manifest.find(sweep_id, storage="elsewhere").path == (tmp_path / "elsewhere" / sweep_id / MANIFEST)


def test_find_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Manifest.find("nope")
    assert info.value.path == "sweep" and str(tmp_path / "nope") in info.value.message
    assert str(tmp_path / "raysweep_results" / "nope") in info.value.message


def test_a_manifest_saved_from_a_relative_folder_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = Manifest.new(Path("rel"), sweep_id="s", spec={}, tracking_uri="u", experiment="e", parent_tags={})
    manifest.save()
    assert manifest.path == tmp_path / "rel" / MANIFEST
    assert json.loads((tmp_path / "rel" / MANIFEST).read_text())["sweep_id"] == "s"


def test_ended_says_whether_a_resume_has_anything_to_do(sweep):
    manifest = Manifest.find(sweep[0])
    assert not manifest.ended
    manifest.start_phase("search", sweep[0], ["t1"])
    manifest.update(status="finished")
    assert not manifest.ended  # a phase still running: Ray has work
    manifest.finish_phase("search", 1, 0, 0)
    assert manifest.ended
