"""Export of the denoiser step: ONNX and TensorRT."""
