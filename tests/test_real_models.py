"""Image models: forward/backward on their input sizes, exact sizes, input normalisation, speed options,
local pretrained weights, and the bi-level virtual step through them."""

import pytest
import torch
from torch import nn

from trainables.methods.meta import virtual_step
from trainables.models import NormedLinear, build_model, model_params
from trainables.models.resnet import ImageInput
from trainables.params import ConfigError

INPUTS = {"resnet32": (3, 32, 32), "resnet10": (3, 64, 64), "resnet50": (3, 64, 64), "lenet5": (1, 28, 28)}


def make(name, input_shape=None, num_classes=10, input_norm=None, **options):
    cfg = {"name": name, **{k: p.default for k, p in model_params(name).items()}, **options, "input_norm": input_norm}
    return build_model(cfg, input_shape or INPUTS[name], num_classes)


def images(shape, n=4, seed=0):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_forward_backward_on_uint8_images(name):
    torch.manual_seed(0)
    net = make(name)
    out = net(images(INPUTS[name]))
    assert out.shape == (4, 10) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_resnet32_has_the_cifar_parameter_count():
    # By hand: conv1 3*16*9 + bn 2*16; stage 1: 5 x (2 * 16*16*9 + 4*16); stage 2: 16*32*9 + 32*32*9 + 4*32,
    # then 4 x (2 * 32*32*9 + 4*32); stage 3 likewise with 64; fc 64*10 + 10. Option-A shortcuts have none.
    expected = (432 + 32 + 5 * (4608 + 64) + (4608 + 9216 + 128) + 4 * (18432 + 128)
                + (18432 + 36864 + 256) + 4 * (73728 + 256) + 650)
    assert expected == 464154
    assert sum(p.numel() for p in make("resnet32").parameters()) == expected


def test_lenet5_has_the_classic_geometry():
    net = make("lenet5")
    # conv 1*6*25+6, conv 6*16*25+16, fc 16*5*5*120+120 (28x28 padded by 2 = 32x32), 120*84+84, 84*10+10
    assert sum(p.numel() for p in net.parameters()) == 156 + 2416 + 48120 + 10164 + 850
    assert make("lenet5", (28, 28))(images((28, 28))).shape == (4, 10)  # (H, W) inputs get a channel axis


def test_resnet10_is_basic_blocks_one_per_stage_and_accepts_gray_images():
    net = make("resnet10", (1, 32, 32), num_classes=7)
    assert [len(getattr(net.features, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert net.features.conv1.in_channels == 1 and net(images((1, 32, 32))).shape == (4, 7)


def test_input_normalisation_maps_uint8_to_standardised_floats():
    layer = ImageInput(2, ((0.5, 0.0), (0.25, 2.0)), channels_last=False)
    x = torch.tensor([255, 0], dtype=torch.uint8).view(1, 2, 1, 1)
    assert layer(x).flatten().tolist() == [(1.0 - 0.5) / 0.25, 0.0]
    floats = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1)  # float inputs are taken as [0, 1] already
    assert torch.allclose(layer(floats).flatten(), torch.tensor([(0.2 - 0.5) / 0.25, 0.4 / 2.0]))
    assert "mean" not in layer.state_dict()  # weights stay independent of the dataset's statistics
    with pytest.raises(ValueError, match="3 means"):
        ImageInput(3, ((0.5,), (0.2,)), channels_last=False)


def test_the_dataset_normalisation_reaches_the_model():
    torch.manual_seed(0)
    plain = make("resnet32")
    torch.manual_seed(0)
    normed = make("resnet32", input_norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    x = images((3, 32, 32))
    plain.eval(), normed.eval()
    assert torch.allclose(normed(x), plain((x.float() / 255 - 0.5) / 0.25), atol=1e-5)


def test_normed_classifier_gives_cosine_logits():
    net = make("resnet32", normed_classifier=True)
    assert isinstance(net.classifier, NormedLinear)
    out = net(images((3, 32, 32)))
    assert (out.abs() <= 1 + 1e-5).all()


@pytest.mark.parametrize("name", ["resnet32", "lenet5"])
def test_channels_last_and_bf16_options(name):
    torch.manual_seed(0)
    ref = make(name)
    torch.manual_seed(0)
    fast = make(name, channels_last=True)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = images(INPUTS[name])
    ref.eval(), fast.eval()
    assert torch.allclose(ref(x), fast(x), atol=1e-5)
    torch.manual_seed(0)
    half = make(name, bf16=True).eval()
    out = half(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref(x))
    assert torch.allclose(out, ref(x), atol=0.1, rtol=0.1)
    half.train()
    half(x).sum().backward()


def test_non_image_inputs_are_a_configuration_error():
    with pytest.raises(ConfigError, match="needs image inputs") as err:
        make("resnet32", (40,))
    assert err.value.path == "model.name"


def test_pretrained_weights_load_only_from_a_local_file(tmp_path):
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(1)
    source = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "r10.pt")
    net = make("resnet10", num_classes=5, weights=str(tmp_path / "r10.pt"))
    assert torch.equal(net.features.conv1.weight, source.conv1.weight)
    assert torch.equal(net.features.layer4[0].bn2.running_var, source.layer4[0].bn2.running_var)
    assert net.classifier.out_features == 5
    with pytest.raises(ConfigError, match="does not fit") as err:
        make("resnet50", weights=str(tmp_path / "r10.pt"))
    assert err.value.path == "model.weights"
    with pytest.raises(ConfigError, match="no file"):
        make("resnet10", weights=str(tmp_path / "absent.pt"))


def test_virtual_step_runs_through_resnet32():
    """The bi-level methods' functional virtual step works on the image model (uint8 input, BN buffers)."""
    torch.manual_seed(0)
    net = make("resnet32", num_classes=3)
    w = torch.ones(4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    x = images((3, 32, 32))
    before = {n: b.clone() for n, b in net.named_buffers()}
    def weighted(logits):
        return (w * nn.functional.cross_entropy(logits, y, reduction="none")).mean()

    params, _ = virtual_step(net, x, weighted, 0.1)
    (grad,) = torch.autograd.grad(sum(p.sum() for p in params.values()), w)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(torch.equal(b, before[n]) for n, b in net.named_buffers())
