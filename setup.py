from pathlib import Path

from setuptools import setup

setup(
    name="ofa-deploy",
    version="0.1.0",
    description="Once-for-All deployment: elastic supernets, latency tables, search, export, benchmarks",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["ofa_deploy", "ofa_deploy.bench", "ofa_deploy.cli", "ofa_deploy.search", "supernet",
              "supernet.training", "profilers", "luts"],
    package_data={"luts": ["tables/*.json"], "ofa_deploy": ["assets/*"], "supernet": ["assets/*"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy>=1.24",
        "click>=8.1",
        "PyYAML>=6.0",
        "onnx>=1.16",
        "onnxscript>=0.1",
        "onnxruntime>=1.18",
        "ai-edge-litert>=1.0",
        "adb-shell[async]>=0.4.4",
        "adbutils>=2.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",
    ],
    extras_require={
        # ai-edge-quantizer is imported directly (fp16 weight casting), not only through litert-torch
        "tflite": ["litert-torch", "ai-edge-quantizer"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
    },
    entry_points={"console_scripts": ["ofa-deploy=ofa_deploy.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: MIT License"],
)
