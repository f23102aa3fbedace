"""Network: reference-quantized GraphModule -> strongly typed TensorRT INetworkDefinition.

```
find_unsupported(gm)            every node no converter takes, before any TensorRT object exists
network_from_graph_module(gm, [InputSpec, ...])                                         network.py
  ConversionContext: network, values by node, one naming helper (layer name = FX node)  context.py
  converters (fx2trt_pipeline.converters, source in converters/), one small function per target,
    calling the shared layer builders: Q/DQ, elementwise, activations...              layer_builders.py
    int8 weight -> IDequantizeLayer -> kernel input, conv / deconv / matmul           weight_builders.py
    dynamic-shape arithmetic (shape tensors) for view / reshape / flatten / size     shape_builders.py
```

Nothing is imported here so that the package loads without TensorRT (``fx2trt_pipeline.trt_api`` is
the one module that imports it).
"""
