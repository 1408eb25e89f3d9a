"""Shipped model weights (installed as the package ``vaecodec.weights_data``); see vaecodec/weights.py."""
