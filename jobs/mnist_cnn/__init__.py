"""A small CNN on MNIST (or synthetic font-rendered digits): the base case of the training
techniques study. Run ``python -m jobs.mnist_cnn --help``."""
