"""Architecture generators (VAE, GAN) and the task embedding that conditions them."""

from dnas_core import hookimpl

from .gan import GraphGAN
from .vae import GraphVAE

__all__ = ["GraphGAN", "GraphVAE"]


@hookimpl
def dnas_register_generators():
    return [GraphVAE, GraphGAN]
