"""Export: the simulated INT8 model as a QDQ ONNX file (QuantizeLinear / DequantizeLinear, per-channel axis).

``onnx_export.export_qdq_onnx`` writes what ONNX Runtime runs as a parity backend and what TensorRT's
ONNX parser (datacenter TensorRT and TensorRT-RTX) builds into the same strongly typed network.
"""
