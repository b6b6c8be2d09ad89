"""The names ``raysweep`` promises (load a spec, plan it, run it, read its results), without Ray."""

import pytest
import yaml

import raysweep
from trainables.params import ConfigError

SPEC = {"name": "api", "dataset": {"name": "gaussian", "samples_per_class": 60}, "model": "mlp",
        "train": {"epochs": 2}, "methods": {"ce": {}, "focal": {"gamma": [1, 2]}}, "seeds": 2}


def test_the_package_names_exactly_its_public_api():
    assert raysweep.__all__ == ["load_spec", "plan", "results", "run"]


def test_load_spec_applies_overrides_and_plan_lists_every_trial(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    spec = raysweep.load_spec(path, overrides=["seeds=3"])
    trials = raysweep.plan(spec)
    assert spec.seeds == (0, 1, 2)
    assert len(trials) == 3 * 3 and {t.config["method"]["name"] for t in trials} == {"ce", "focal"}


def test_load_spec_refuses_bad_input_naming_the_field(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    with pytest.raises(ConfigError, match="methods.focal.gamma"):
        raysweep.load_spec(path, overrides=["methods.focal.gamma=-1"])


@pytest.mark.parametrize("package", ["spec", "search", "planning", "execution", "tracking", "reporting"])
def test_each_subpackage_names_public_parts_that_resolve(package):
    import importlib

    module = importlib.import_module(f"raysweep.{package}")
    assert module.__doc__ and module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


@pytest.mark.process
def test_importing_raysweep_sets_no_environment_variable_and_the_cli_sets_its_defaults():
    import subprocess
    import sys

    from raysweep.environment import DEFAULTS

    code = ("import os, json; before = dict(os.environ)\n"
            "import raysweep.cli, raysweep.execution.runner, raysweep.reporting.report, raysweep.tracking.sync\n"
            "changed = {k: v for k, v in os.environ.items() if before.get(k) != v}\n"
            "from raysweep.environment import apply_defaults; env = {}; apply_defaults(env)\n"
            "print(json.dumps([changed, env]))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    changed, applied = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert changed == {} and applied == dict(DEFAULTS)
