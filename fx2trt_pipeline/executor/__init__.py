"""Executor: TensorRT's arithmetic in torch, the independent check on what the converters built.

```
network_executor     NetworkExecutor: runs a built INetworkDefinition layer by layer with TensorRT's semantics
executor_common      the handler registry, input lookup and weight reading shared by the handlers
executor_layers      convolution, deconvolution, pooling, resize, activation, normalization, scale, padding
executor_tensor_ops  Q/DQ, constant, cast, elementwise, unary, matrix multiply, shape, select, reduce, softmax, top-k
executor_shape_ops   shuffle, concatenation, squeeze, unsqueeze, slice, gather
executor_int8        the integer-exact path: an INT8 conv / matmul as TensorRT computes it (int32 sums)
exact_reference      TensorRTArithmetic: torch.ao / PT2E graphs evaluated with TensorRT's integer arithmetic
```

The executor reads only the network object, never the FX graph or the converters that made it, so a
converter bug cannot hide behind shared code.
"""
