"""engine.py's pieces that need no training run: precise BatchNorm statistics."""

import pytest
import torch
from torch import nn

from resnet50_trainer.config import parse_config
from resnet50_trainer.distributed import Placement
from resnet50_trainer.engine import precise_bn

CPU = Placement(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(2))


def _batches(n):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 3, 6, 6, generator=generator) * (i + 1), torch.zeros(5))
            for i in range(n)]


def test_precise_bn_sets_the_plain_average_of_the_batches_statistics():
    model = _model()
    model(_batches(1)[0][0])  # materialise the lazy layer
    bn = model[1]
    bn.running_mean.fill_(1e4)  # what a diverged moving average looks like
    batches = _batches(4)
    with torch.no_grad():
        features = [model[0](images) for images, _ in batches[:3]]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    variances = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1) for f in features]).mean(0)

    used = precise_bn(model, batches, 3, CPU, parse_config(["--synthetic"]))

    assert used == 3
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert torch.allclose(bn.running_var, variances, rtol=1e-4)
    assert bn.momentum == pytest.approx(0.1)  # restored
    model.eval()  # evaluation now normalises with those statistics
    assert torch.allclose(model[:2](batches[0][0]).mean(dim=(0, 2, 3)),
                          (features[0].mean(dim=(0, 2, 3)) - means) /
                          torch.sqrt(variances + bn.eps), atol=1e-4)


def test_precise_bn_stops_at_the_loader_end_and_does_nothing_when_off():
    model = _model()
    model(_batches(1)[0][0])
    assert precise_bn(model, _batches(2), 10, CPU, parse_config(["--synthetic"])) == 2
    before = model[1].running_mean.clone()
    assert precise_bn(model, _batches(2), 0, CPU, parse_config(["--synthetic"])) == 0
    assert torch.equal(model[1].running_mean, before)
