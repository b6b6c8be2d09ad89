"""How a phase's trials are cut into groups (raysweep.planning.plan.group_trials): under the member cap as evenly as
possible, in plan order, configurations split further to fill the slots, the seeds of a configuration
never split for them, and what `raysweep plan` says about it."""

from raysweep.planning.plan import CONFIRM, SEARCH, Phase, confirm_plan, describe_plan, group_trials, plan
from raysweep.spec.schema import validate_spec


def spec(extra=None, **execution):
    """10 trials (5 focal configurations x 2 seeds) sharing one setup, grouped by ``execution``."""
    return validate_spec({"name": "g", "dataset": {"name": "gaussian", "imbalance": 10}, "model": "mlp",
                          "train": {"epochs": 2}, "methods": {"focal": {"gamma": [0.0, 1.0, 2.0, 3.0, 4.0]}},
                          "seeds": 2, "execution": execution, **(extra or {})})


def sizes(groups):
    return [g.size for g in groups]


def keys(groups):
    return [t.key for g in groups for t in g.members]


SEARCH_PHASE = Phase(SEARCH, "g")


def test_configurations_are_cut_evenly_under_the_cap_in_plan_order():
    s = spec(group="configs", max_members=4)
    trials = plan(s)
    groups = group_trials(s, SEARCH_PHASE, trials)
    assert sizes(groups) == [4, 3, 3] and keys(groups) == [t.key for t in trials]
    assert sizes(group_trials(s, SEARCH_PHASE, trials, slots=2)) == [4, 3, 3], "enough groups for 2 slots"


def test_fewer_groups_than_slots_are_split_evenly_to_fill_them():
    s = spec(group="configs")
    trials = plan(s)
    assert sizes(group_trials(s, SEARCH_PHASE, trials)) == [10]
    assert sizes(group_trials(s, SEARCH_PHASE, trials, slots=4)) == [3, 3, 2, 2]
    assert sizes(group_trials(s, SEARCH_PHASE, trials, slots=40)) == [1] * 10
    assert keys(group_trials(s, SEARCH_PHASE, trials, slots=4)) == [t.key for t in trials]


def test_the_setup_with_the_largest_groups_is_split_first():
    s = spec(group="configs", extra={"axes": {"dataset.imbalance": [10, 100]}})
    trials = [t for t in plan(s) if t.config["dataset"]["imbalance"] == 10]
    trials += [t for t in plan(s) if t.config["dataset"]["imbalance"] == 100][:4]
    groups = group_trials(s, SEARCH_PHASE, trials, slots=4)
    assert [(g.members[0].config["dataset"]["imbalance"], g.size) for g in groups] == \
        [(10, 4), (10, 3), (10, 3), (100, 4)]


def test_seed_groups_are_never_split_for_slots_and_asha_groups_only_seeds():
    s = spec(group="seeds", max_members=16)
    groups = group_trials(s, SEARCH_PHASE, plan(s), slots=64)
    assert sizes(groups) == [2] * 5 and all(len({t.config_id for t in g.members}) == 1 for g in groups)
    asha = spec(group="configs", extra={"scheduler": {"name": "asha", "grace_period": 1}})
    assert sizes(group_trials(asha, SEARCH_PHASE, plan(asha), slots=64)) == [2] * 5
    lines = describe_plan(asha, plan(asha))
    assert "groups: a scheduler stops whole Ray trials, so phase 1 (asha) groups only seeds" in lines
    assert "10 trials in 5 groups of 2 (by seeds), engine auto; cost per group about 4 CE-epochs" in lines


def test_phase_two_groups_configurations_and_fills_the_slots():
    s = spec(group="configs", extra={"scheduler": {"name": "asha", "grace_period": 1},
                                     "search": {"two_phase": True, "top_k": 2}})
    confirm = confirm_plan(s, plan(s)[:2])
    assert sizes(group_trials(s, Phase(CONFIRM, "g-confirm"), confirm)) == [4]
    assert sizes(group_trials(s, Phase(CONFIRM, "g-confirm"), confirm, slots=2)) == [2, 2]


def test_plan_says_how_the_groups_fill_the_machine(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("raysweep.planning.plan.local_cpus", lambda: 4)
    s = spec(group="configs", extra={"resources": {"cpu": 1}})
    lines = describe_plan(s, plan(s))
    assert "10 trials in 4 groups of 2 to 3 (by configs), engine auto; cost per group about 4-6 CE-epochs" in lines
    assert "groups: split evenly to fill the 4 slots of this machine (fewer would leave cores idle)" in lines
    assert "workers: at most 4 worker processes (4 Ray trials at once on 4 CPUs)" in lines
    # single-threaded trials of cpu 0.5 get one core each, not half a core: 4 processes on 4 cores, not 8
    half = spec(group="configs", extra={"resources": {"cpu": 0.5}})
    assert "groups: split evenly to fill the 4 slots of this machine (fewer would leave cores idle)" in \
        describe_plan(half, plan(half))
    capped = spec(group="configs", extra={"resources": {"cpu": 0.5, "max_concurrent": 1}})
    assert "10 trials in 1 group of 10 (by configs), engine auto; cost per group about 20 CE-epochs" in \
        describe_plan(capped, plan(capped))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert "groups: split further at run time while there are fewer of them than the cluster's slots" in \
        describe_plan(s, plan(s))
