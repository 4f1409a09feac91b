"""Transfer learning for image classification: a torchvision-compatible VGG or ResNet
backbone, pretrained weights from a file or URL, a new head, then fine-tuning. Run
``python -m jobs.transfer --help`` (training) or ``python -m jobs.transfer predict --help``."""
