"""Engine: strongly typed network -> serialized engine + metadata sidecar -> verified load -> run.

```
network_from_graph_module(qgm, inputs)                      (fx2trt_pipeline.network)
  -> engine_from_network(builder, network, inputs, options)   bytes + sidecar fields + plan   engine_builder.py
       checks, profile, timing cache                                                          build_setup.py
  -> save_engine(bytes, path, metadata, plan)  model.plan + .json (+ .layers.json), atomic    engine_files.py
  -> load_engine_bytes(path)   size, sha256, the engine's library + version, header   artifact.py
  -> Engine.load(path)   with the engine's own library; GPU targeted?             compatibility.py
       TensorRT-RTX asks Runtime.get_engine_validity; deserialize            loading.py
       runtime config: kernel specialization, runtime cache                   runtime_config.py
  -> engine(x_cuda) -> {"output": tensor}   checked, 256-byte aligned I/O      bindings.py
       enqueued on the caller's stream or a private one ordered with it        streams.py, runtime.py
build_engine(qgm, inputs, path, options=BuildOptions(...)) chains the first three, converting once.
```

Modules are imported on use (``from fx2trt_pipeline.engine.engine_builder import build_engine``);
this package imports nothing so that ``fx2trt_pipeline.atomic_io`` stays usable without TensorRT.
"""
