"""Shipped model weights (installed as the package ``vaecodec.weights_data``); see weights/README.md."""
