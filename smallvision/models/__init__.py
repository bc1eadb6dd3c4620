"""Backbones, heads, pretrained weights and the model folder."""
