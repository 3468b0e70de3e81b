"""ONNX serving and the model registry: weights live here, nothing else."""
