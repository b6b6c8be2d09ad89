"""LDAM-DRW: margins by hand, the margin loss, the cosine classifier and when re-weighting starts."""

import math
from types import SimpleNamespace

import pytest
import torch

from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.loop import Trial
from trainables.methods import METHODS
from trainables.methods.cb import effective_number_weights
from trainables.methods.ldam_drw import ldam_margins
from trainables.models import NormedLinear


def test_margins_by_hand():
    # n^(-1/4) of [81, 16, 1] is [1/3, 1/2, 1]: scaled so the rarest class gets max_m.
    torch.testing.assert_close(ldam_margins(torch.tensor([81, 16, 1])), torch.tensor([1 / 6, 1 / 4, 1 / 2]))
    torch.testing.assert_close(ldam_margins(torch.tensor([16.0, 256.0]), max_m=1.0), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(ldam_margins(torch.tensor([7.0, 7.0])), torch.tensor([0.5, 0.5]))


def test_empty_class_gets_max_margin():
    torch.testing.assert_close(ldam_margins(torch.tensor([16.0, 0.0, 1.0]), 0.5), torch.tensor([0.25, 0.5, 0.5]))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="max_m"):
        ldam_margins(torch.tensor([1.0]), 0.0)
    for counts in (torch.tensor([1.0, -1.0]), torch.zeros(2), torch.ones(1, 2)):
        with pytest.raises(ValueError, match="class_counts"):
            ldam_margins(counts)


def ldam_method(counts, epochs=10, **hp):
    cls = METHODS.get("ldam_drw")
    ctx = SimpleNamespace(class_counts=torch.tensor(counts), device=torch.device("cpu"), epochs=epochs)
    return cls(cls.resolve_params(hp), ctx)


def test_loss_by_hand_before_and_after_drw():
    counts = [81.0, 16.0, 1.0]
    margins = [1 / 6, 1 / 4, 1 / 2]
    z = torch.tensor([[0.9, 0.1, -0.2], [0.2, 0.3, 0.25]])
    y = torch.tensor([0, 2])

    def ce(row, t):
        s = [30 * (v - (margins[t] if j == t else 0.0)) for j, v in enumerate(row)]
        return -(s[t] - math.log(sum(math.exp(v) for v in s)))

    losses = [ce(row, t) for row, t in zip(z.tolist(), y.tolist(), strict=True)]
    method = ldam_method(counts, epochs=10, drw_fraction=0.8)
    assert method.drw_start == 8
    method.on_epoch_start(7)
    assert float(method.loss(z, y, y)) == pytest.approx(sum(losses) / 2, rel=1e-6)
    method.on_epoch_start(8)
    w = effective_number_weights(torch.tensor(counts), 0.9999).tolist()
    weighted = (w[0] * losses[0] + w[2] * losses[1]) / (w[0] + w[2])
    assert float(method.loss(z, y, y)) == pytest.approx(weighted, rel=1e-6)


def test_drw_start_follows_the_fraction():
    assert ldam_method([5.0, 1.0], epochs=200).drw_start == 160  # the paper's 160 of 200
    assert ldam_method([5.0, 1.0], epochs=7, drw_fraction=0.5).drw_start == 3
    assert ldam_method([5.0, 1.0], epochs=7, drw_fraction=1.0).drw_start == 7  # never


def test_training_uses_the_cosine_classifier_and_switches_weights_on():
    cfg = {"method": {"name": "ldam_drw", "drw_fraction": 0.5}, "model": "mlp", "seed": 0,
           "dataset": {"name": "gaussian", "imbalance": 10}, "train": {"epochs": 2, "device": "cpu"}}
    trial = Trial(cfg)
    assert isinstance(trial.model.classifier, NormedLinear)
    active = [trial.run_epoch()["ldam_drw_active"] for _ in range(2)]
    assert active == [0.0, 1.0]


def test_grid():
    configs = expand_method("ldam_drw", space_for("ldam_drw").grid, "method")
    assert len(configs) == 9 and {c["scale"] for c in configs} == {30.0}


def test_plan_warns_when_asha_grace_ends_before_the_deferred_reweighting(tmp_path, capsys):
    import yaml

    from raysweep.cli import main

    spec = {"name": "w", "dataset": {"name": "gaussian"}, "model": "mlp", "train": {"epochs": 10},
            "methods": {"ce": {}, "ldam_drw": {}}, "scheduler": {"name": "asha", "grace_period": 3}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    out = capsys.readouterr().out
    assert "warning: ldam_drw only starts acting at epoch 9, after the grace period (3)" in out
    assert "warning: ce" not in out
