from swaplab.models.lighting.module import LightingNetModule, contrastive_loss

__all__ = ["LightingNetModule", "contrastive_loss"]
