"""A walk through a trained DCGAN's latent space: spherical interpolation between random
points, written as PNG frames, an animated GIF and a contact sheet.
Run ``python -m jobs.latent_walk --help``."""
