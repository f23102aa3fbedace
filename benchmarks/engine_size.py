"""Engine size of MobileNetV2 by what is quantized: all INT8, depthwise convs in float, and so on.

TensorRT-RTX's builder on the CPU; static input (1, 3, 224, 224); random weights (size does not depend
on the values). Shows where the bytes of an INT8 engine go.

    python benchmarks/engine_size.py
"""

from __future__ import annotations

import os
import tempfile

import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(1, 3, 224, 224)
    spec = [ftp.InputSpec("x", (1, 3, 224, 224))]
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    depthwise = tuple(n for n, m in convs.items() if m.groups > 1)
    dense = tuple(n for n, m in convs.items() if m.groups == 1)
    int8_bytes = sum(m.weight.numel() for m in convs.values()) + model.classifier[1].weight.numel()
    print(
        f"mobilenet_v2: {len(depthwise)} depthwise and {len(dense)} dense convs; int8 weights {int8_bytes / 1e6:.2f} MB"
    )
    cases = {
        "all INT8 (default)": (),
        "depthwise convs in float": depthwise,
        "dense convs in float": dense,
        "classifier in float": ("classifier.1",),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, skip) in enumerate(cases.items()):
            qgm = ftp.quantize_model(
                model,
                [x],
                example_inputs=(x,),
                config=ftp.QuantConfig(calibrator="minmax", skip=skip, show_progress=False),
            )
            art = ftp.build_engine(qgm, spec, os.path.join(tmp, f"{i}.plan"))
            print(f"  {name:28s} engine {art.size_bytes / 1e6:6.2f} MB")
        gm = capture(model)
        fold_batchnorm(gm)
        art = ftp.build_engine(gm, spec, os.path.join(tmp, "float.plan"))
        print(f"  {'float model (BN folded)':28s} engine {art.size_bytes / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
