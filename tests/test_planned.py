"""The one form of a trial: a planned trial and the envelope of a Tune trial, each serialised once."""

import json

import pytest

from raysweep.planning.plan import plan
from raysweep.spec.schema import validate_spec
from trainables.planned import ENVELOPE, Envelope, PlannedTrial

SPEC = {"name": "p", "dataset": {"name": "gaussian"}, "model": "mlp", "train": {"epochs": 3},
        "methods": {"focal": {"gamma": [1, 2]}}, "axes": {"train.lr": [0.05, 0.1]}, "seeds": 2}


@pytest.fixture(scope="module")
def trials():
    return plan(validate_spec(SPEC))


def test_a_planned_trial_round_trips_through_json_as_itself(trials):
    for trial in trials:
        again = PlannedTrial.from_dict(json.loads(json.dumps(trial.to_dict())))
        assert again == trial and again.key == trial.key


def test_an_envelope_round_trips_through_the_tune_config_with_its_members_as_planned_trials(trials):
    group = trials[:2]
    env = Envelope.of(group, plugins=["my_plugin"], experiment_dir="/x/exp", gpu_fraction=0.25, engine="fused")
    config = json.loads(json.dumps(env.to_config()))
    assert list(config) == [ENVELOPE]
    back = Envelope.from_config(config)
    assert back == env and back.members == tuple(group) and back.grouped
    assert back.key == f"{group[0].key}+1" and back.label == f"{group[0].label} s0,1"


def test_a_single_trial_envelope_is_keyed_by_its_trial(trials):
    env = Envelope.of([trials[0]])
    assert env.key == trials[0].key and not env.grouped and env.members[0].epochs == 3
