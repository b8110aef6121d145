"""Autoregressive models: char-RNN, neural n-gram, MADE, WaveNet, PixelCNN, Gated PixelCNN, PixelCNN++.

Each model lives in its own module and registers itself with :mod:`gmcore.models.registry` when
imported; this package imports them all.
"""
