from setuptools import setup

setup(
    name="pgdm",
    version="0.1.0",
    description="Pseudoinverse-guided diffusion models (ΠGDM): fast image restoration with one pretrained diffusion model",
    python_requires=">=3.10",
    packages=["pgdm", "pgdm.methods", "pgdm.operators", "pgdm.models", "pgdm.kernels", "pgdm.engine", "pgdm.export"],
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
        "dev": [
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
        ],
    },
    entry_points={"console_scripts": ["pgdm=pgdm.cli:main"]},
)
