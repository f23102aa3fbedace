"""How close to FP32 can round-to-nearest INT8 get on MobileNetV2? Ceilings, measured without this library.

The same model, crops and metrics as benchmarks/ptq_algorithms.py (real ImageNet weights, scikit-image photo
crops, mean cosine of the logits and top-1 agreement with FP32), but quantized by a few lines of plain torch
written here (BN folded; weights per output channel, narrow int8; activations fake-quantized at the input of
every conv / linear with thresholds from the calibration crops), so that nothing of the quantizer under test
is reused. Rows:

* weights only: activations left in float; the ceiling of any activation treatment;
* per-tensor activations (what TensorRT runs): max, 99.99th and 99.9th percentile thresholds;
* per-channel activations (TensorRT has no per-channel activation scales): the ceiling of any equalization,
  which at best makes a per-tensor scale as good as per-channel ones.

    python benchmarks/ptq_ceiling.py --threads 2
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from ptq_algorithms import load
from torch import nn

#: Values sampled per tensor (or per channel) for percentiles: torch.quantile refuses more than 2**24.
_SAMPLE = 1_000_000


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every Conv2d -> BatchNorm2d pair inside a Sequential folded into the conv."""
    model = copy.deepcopy(model)
    for module in model.modules():
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
                module._modules[second] = nn.Identity()
    return model


def quantize_weight(w: torch.Tensor) -> torch.Tensor:
    scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def threshold(x: torch.Tensor, per_channel: bool, quantile: float) -> torch.Tensor:
    """|x| threshold per tensor (0-d) or per channel (shaped to broadcast over x)."""
    g = torch.Generator().manual_seed(0)
    if not per_channel:
        v = x.abs().flatten()
        v = v[torch.randperm(v.numel(), generator=g)[:_SAMPLE]] if quantile < 1 else v
        return v.max() if quantile == 1 else torch.quantile(v, quantile)
    v = x.abs().transpose(0, 1).reshape(x.shape[1], -1)
    if quantile < 1:
        v = torch.quantile(v[:, torch.randperm(v.shape[1], generator=g)[: _SAMPLE // 5]], quantile, dim=1)
    else:
        v = v.amax(1)
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


def quantized_copy(folded: nn.Module, calib: list[torch.Tensor], activations: str, quantile: float) -> nn.Module:
    model = copy.deepcopy(folded)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    seen: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in layers}
    hooks = [m.register_forward_pre_hook(lambda m, inp: seen[m].append(inp[0].detach())) for m in layers]
    with torch.no_grad():
        for batch in calib:
            model(batch)
    for h in hooks:
        h.remove()
    amax = {m: threshold(torch.cat(v), activations == "per-channel", quantile) for m, v in seen.items()}
    with torch.no_grad():
        for m in layers:
            m.weight.copy_(quantize_weight(m.weight))
    if activations != "none":
        for m in layers:
            s = amax[m].clamp_min(1e-12) / 127
            m.register_forward_pre_hook(lambda m, inp, s=s: (torch.clamp(torch.round(inp[0] / s), -128, 127) * s,))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-batches", type=int, default=3)
    parser.add_argument("--eval-batches", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, calib, evaluation = load("mobilenet_v2", args.calib_batches, args.eval_batches, 8)
    with torch.no_grad():
        reference = model(evaluation)
    folded = fold_batchnorm(model).eval()
    print(f"mobilenet_v2, calibration {args.calib_batches}x8 crops, evaluation {len(evaluation)} crops")
    print(f"{'activations':34s} {'cosine':>8s} {'top-1':>7s}")
    rows = [("none", 1.0)] + [(kind, q) for q in (1.0, 0.9999, 0.999) for kind in ("per-tensor", "per-channel")]
    for kind, quantile in rows:
        with torch.no_grad():
            out = quantized_copy(folded, calib, kind, quantile)(evaluation)
        cos = F.cosine_similarity(out, reference, dim=1).mean().item()
        top1 = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        label = "float (weights only)" if kind == "none" else f"{kind}, {'max' if quantile == 1 else quantile}"
        print(f"{label:34s} {cos:8.4f} {top1:7.3f}", flush=True)


if __name__ == "__main__":
    main()
