"""The bundled ResNet50 DDP trainer: `resnet50-train` or `python -m resnet50_trainer`."""

__version__ = "0.1.0"
