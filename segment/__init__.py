"""RWKV-UNet medical image segmentation (spec ``rwkv-unet.md``): model, Bi-WKV, data, training."""
