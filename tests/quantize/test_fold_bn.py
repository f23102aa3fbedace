"""BatchNorm folding is numerically exact (to float rounding) for every weighted layer kind."""

import pytest
import torch
from torch import nn

from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm


def _randomise_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


CASES = [
    (nn.Sequential(nn.Conv1d(4, 6, 3, bias=False), nn.BatchNorm1d(6)), (2, 4, 10)),
    (nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)), (2, 4, 9, 9)),
    (nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4)), (1, 2, 5, 5, 5)),
    (nn.Sequential(nn.ConvTranspose1d(4, 6, 4, stride=2), nn.BatchNorm1d(6)), (2, 4, 7)),
    (nn.Sequential(nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
    (nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
    (nn.Sequential(nn.Linear(8, 5), nn.BatchNorm1d(5)), (3, 8)),
]


@pytest.mark.parametrize(
    "model,shape", CASES, ids=lambda c: type(c[0]).__name__ if isinstance(c, nn.Sequential) else None
)
def test_fold_matches_unfolded(model: nn.Module, shape: tuple[int, ...]) -> None:
    _randomise_bn(model)
    model.eval()
    gm = capture(model)
    assert fold_batchnorm(gm) == 1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ref, got = model(x), gm(x)
    assert torch.allclose(ref, got, rtol=1e-5, atol=1e-5), (ref - got).abs().max()


def test_fold_leaves_user_model_and_multi_use_convs_alone() -> None:
    class TwoUses(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = TwoUses().eval()
    gm = capture(model)
    assert fold_batchnorm(gm) == 0
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    _randomise_bn(seq)
    before = seq[0].weight.clone()
    gm = capture(seq)
    fold_batchnorm(gm)
    assert torch.equal(seq[0].weight, before)
