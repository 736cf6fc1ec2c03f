"""Model side of the harness: the Wan system (experts, scheduler, VAE, prompt encoder) and its loaders."""
from cos.models.system import IdentityVAE, WanSystem, WanVAE
from cos.models.loading import load_system
from cos.models.tiny import tiny_transformer, tiny_vae, tiny_system

__all__ = ["WanSystem", "WanVAE", "IdentityVAE", "load_system", "tiny_transformer", "tiny_vae", "tiny_system"]
