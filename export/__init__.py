"""Export of a method's whole step: ONNX (runs in ONNX Runtime and TensorRT)."""
from .onnx import OnnxStepRestorer, export_step

__all__ = ["OnnxStepRestorer", "export_step"]
