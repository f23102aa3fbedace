"""Capture: nn.Module -> torch.fx GraphModule."""

from fx2trt_pipeline.capture.tracer import LeafTracer, capture, check_example_inputs, flatten_outputs

__all__ = ["LeafTracer", "capture", "check_example_inputs", "flatten_outputs"]
