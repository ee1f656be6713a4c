"""The framewatch worker: Kafka segments → PyAV frames → batched engine → Redis scores.

Never imports torch (checked by tests): the worker image carries ONNX Runtime or TensorRT only.
"""
