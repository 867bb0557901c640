import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(r'__version__ = "([^"]+)"', (Path(__file__).parent / "pgdm" / "__init__.py").read_text()).group(1)

setup(
    name="pgdm",
    version=VERSION,
    description="Pseudoinverse-guided diffusion models (ΠGDM): fast image restoration with one pretrained diffusion model",
    python_requires=">=3.10",
    packages=[
        "pgdm", "pgdm.methods", "pgdm.operators", "pgdm.models", "pgdm.kernels", "pgdm.engine", "pgdm.export",
        "pgdm.entrypoints", "pgdm.entrypoints.bench", "pgdm.entrypoints.serve",
    ],
    package_dir={
        "pgdm": "pgdm",
        "pgdm.kernels": "kernels",
        "pgdm.engine": "engine",
        "pgdm.export": "export",
    },
    package_data={"pgdm": ["assets/*", "assets/**/*"]},
    install_requires=[
        "torch>=2.4,<2.16",
        "numpy>=1.24",
        "pillow>=10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "torchmetrics>=1.3",
        "jpeglib>=1.0",
    ],
    extras_require={
        "diffusers": ["diffusers>=0.27"],
        "triton": ["triton>=3.0"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "prometheus-client>=0.20"],
        "cupy": ["cupy-cuda12x>=13"],
        "bench": ["matplotlib>=3.7"],
        "ray": ["ray[data]>=2.9"],
        "dev": [
            "matplotlib>=3.7",
            "pytest>=8",
            "scipy>=1.10",
            "jpeglib>=1.0",
            "scikit-image>=0.22",
            "scikit-learn>=1.3",
            "torchmetrics>=1.3",
            "triton>=3.0",
            "diffusers>=0.27",
            "onnx>=1.16",
            "onnxscript>=0.3",
            "onnxruntime>=1.18",
            "fastapi>=0.110",
            "uvicorn>=0.29",
            "python-multipart>=0.0.9",
            "prometheus-client>=0.20",
            "httpx>=0.27",
        ],
    },
    entry_points={"console_scripts": ["pgdm=pgdm.entrypoints.cli:main"]},
)
