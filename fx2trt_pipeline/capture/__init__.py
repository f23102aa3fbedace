"""Capture: nn.Module (or a GraphModule built elsewhere) -> torch.fx GraphModule of plain ops.

::

    rewrites.py          module rewrites before tracing (MultiheadAttention, Swin blocks, input-size padding)
    tracer.py            capture(): trace (a GraphModule: again, its called modules kept as leaves)
    foreign.py           lower what foreign graphs hold, from two example runs (static_values.py):
      onnx2torch_ops.py / onnx2torch_shape.py   onnx2torch node modules -> torch ops
      swin_helpers.py                           torchvision's wrapped Swin helpers -> static window attention
      (static tensors built in forward -> constants; graph_rebuild.py builds the new graph)
    functional_layers.py F.conv2d / F.linear on parameters -> layer modules
    no_op_modules.py     nn.Identity / eval-mode dropout calls leave the graph
"""

from fx2trt_pipeline.capture.tracer import LeafTracer, capture, check_example_inputs, flatten_outputs

__all__ = ["LeafTracer", "capture", "check_example_inputs", "flatten_outputs"]
