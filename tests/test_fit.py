"""The fit check (trainables.data.fit): the estimate's arithmetic, each refusal naming its knob, and the CLI
refusing what cannot fit with exit 2 before anything exists, while ``plan`` prints the estimate."""

from __future__ import annotations

import pytest
import ray
import yaml
from _bounded import bounded

from raysweep.cli import main
from tests._images import write_image_lists
from trainables.config import resolve_trial
from trainables.data.fit import check_fit, trial_fit
from trainables.models import build_model, resolve_model
from trainables.params import ConfigError

GB = 10**9


def imagenet_trial(root, model="resnet10", loader="auto", **train) -> dict:
    return resolve_trial({"method": {"name": "ce"}, "model": model, "seed": 0,
                          "dataset": {"name": "imagenet_lt", "root": str(root), "meta_per_class": 1, "loader": loader},
                          "train": {"epochs": 1, "device": "cpu", **train}})


@pytest.fixture
def lists(tmp_path):
    return write_image_lists(tmp_path / "d", {"train": [30, 10], "val": [2, 2], "test": [5, 5]}, size=(30, 40))


def test_the_estimate_counts_the_store_once_and_the_widest_layer_for_evaluation(lists):
    fit = trial_fit(imagenet_trial(lists, batch_size=128, eval_batch_size=1024))
    assert fit.store == 40 * 3 * 256 * 341 + 14 * 3 * 224 * 224  # train at short side 256 (4:3), val/test 224^2
    assert fit.data == 0  # store-backed: the trial's splits are views
    # ResNet-10 at 224 px: the first BatchNorm reads and writes 64 x 112 x 112 floats a sample
    assert fit.eval_per_sample == 2 * 64 * 112 * 112 * 4
    assert fit.eval_activations == 1024 * fit.eval_per_sample  # 6.6 GB: what the issue measured (8-9 GB RSS)
    resnet10 = build_model(resolve_model("resnet10"), (3, 224, 224), 2)
    assert fit.state == 3 * 4 * sum(p.numel() for p in resnet10.parameters())  # weights, gradients, momentum


def test_the_stores_count_once_per_node_whatever_the_number_of_trials(lists):
    cfg = imagenet_trial(lists, eval_batch_size=8)
    one = check_fit([cfg], trials_per_node=1, node_memory=1000 * GB)
    four = check_fit([cfg, imagenet_trial(lists, eval_batch_size=8, lr=0.5)], trials_per_node=4,
                     node_memory=1000 * GB)
    assert one.stores == four.stores == trial_fit(cfg).store
    assert "4 trial(s)" in four.lines()[0]


def test_stores_larger_than_the_node_name_the_loader_then_store_size(lists):
    train_store = 40 * 3 * 256 * 341
    with pytest.raises(ConfigError) as err:  # a store asked for: stream instead
        check_fit([imagenet_trial(lists, loader="store", eval_batch_size=8)], trials_per_node=1, node_memory=10**7)
    assert err.value.path == "dataset.loader"
    auto = trial_fit(imagenet_trial(lists, eval_batch_size=8), 10**7)  # auto streams the training images
    assert auto.store == 14 * 3 * 224 * 224 and auto.store + train_store > 0.9 * 10**7
    assert auto.loader.startswith("imagenet_lt: dataset.loader stream (auto: the stores (0.0 GB) exceed")
    assert trial_fit(imagenet_trial(lists, eval_batch_size=8), 10**9).loader.startswith(
        "imagenet_lt: dataset.loader store (auto: the stores")
    with pytest.raises(ConfigError) as err:  # even the val/test stores do not fit
        check_fit([imagenet_trial(lists, eval_batch_size=8)], trials_per_node=1, node_memory=10**6)
    assert err.value.path == "dataset.store_size"


def test_an_evaluation_peak_that_overflows_names_eval_batch_size_with_a_batch_that_fits(lists):
    cfg = imagenet_trial(lists, batch_size=16, eval_batch_size=4096)
    with pytest.raises(ConfigError) as err:
        check_fit([cfg], trials_per_node=2, node_memory=32 * GB)
    assert err.value.path == "train.eval_batch_size"
    largest = int(err.value.message.rsplit(" ", 1)[1])
    assert 16 < largest < 4096
    assert check_fit([imagenet_trial(lists, batch_size=16, eval_batch_size=largest)], trials_per_node=2,
                     node_memory=32 * GB) is not None
    with pytest.raises(ConfigError):
        check_fit([imagenet_trial(lists, batch_size=16, eval_batch_size=largest + 64)], trials_per_node=2,
                  node_memory=32 * GB)


def test_a_gpu_share_too_small_names_trials_per_gpu(lists):
    cfg = imagenet_trial(lists, model="resnet50", batch_size=256, eval_batch_size=64)
    with pytest.raises(ConfigError) as err:  # 256 x 123 MB of training activations: 31 GB against 20 GB
        check_fit([cfg], trials_per_node=4, node_memory=1000 * GB, gpu_share=20 * GB)
    assert err.value.path == "resources.trials_per_gpu"
    assert check_fit([cfg], trials_per_node=2, node_memory=1000 * GB, gpu_share=40 * GB).gpu_share == 40 * GB


def test_too_many_private_trials_on_a_node_name_resources_cpu():
    cfg = resolve_trial({"method": {"name": "ce"}, "model": "mlp", "seed": 0,
                         "dataset": {"name": "gaussian", "samples_per_class": 100},
                         "train": {"epochs": 1, "device": "cpu", "batch_size": 8, "eval_batch_size": 8}})
    fit = trial_fit(cfg)
    assert fit.store == 0 and fit.data > 0  # in-memory: every trial holds its splits
    node = int(fit.private(False) * 3 / 0.9)
    check_fit([cfg], trials_per_node=2, node_memory=node)
    with pytest.raises(ConfigError) as err:
        check_fit([cfg], trials_per_node=4, node_memory=node)
    assert err.value.path == "resources.cpu"


def _spec(tmp_path, lists, **train) -> str:
    spec = {"name": "fit", "dataset": {"name": "imagenet_lt", "root": str(lists), "meta_per_class": 1},
            "model": "resnet10", "methods": {"ce": {}}, "seeds": 1, "resources": {"cpu": 1},
            "train": {"epochs": 1, "device": "cpu", **train}}
    path = tmp_path / f"spec-{train['eval_batch_size']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.process  # the CLI probes the platform (uname)
def test_run_refuses_what_cannot_fit_with_exit_2_before_anything_exists(tmp_path, lists, monkeypatch, capsys):
    monkeypatch.setattr("raysweep.planning.plan.node_memory", lambda: 16 * GB)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _spec(tmp_path, lists, eval_batch_size=8192)
    before = sorted(p.name for p in tmp_path.iterdir())
    with bounded(120, "raysweep run refusing an evaluation batch"):
        assert main(["run", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: train.eval_batch_size: ") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not ray.is_initialized()

    assert main(["plan", _spec(tmp_path, lists, eval_batch_size=64)]) == 0
    out = capsys.readouterr().out
    assert "memory per node: stores 0.01 GB once" in out and "of 16.0 GB" in out
    assert main(["plan", path]) == 0
    assert "a run would refuse this sweep: train.eval_batch_size" in capsys.readouterr().out
