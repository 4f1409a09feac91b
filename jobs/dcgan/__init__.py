"""DCGAN (Radford et al., 2016) on a folder of pictures, or on generated shapes: the GAN case
of the training techniques study. Run ``python -m jobs.dcgan --help``."""
