"""Autoregressive models: char-RNN, neural n-gram, MADE, WaveNet, PixelCNN, Gated PixelCNN, PixelCNN++.

Each model lives in its own module and registers itself with :mod:`gmcore.models.registry` when
imported; this package imports them all.
"""
from .char_rnn import CharRNN  # noqa: F401
from .ngram import NeuralNGram  # noqa: F401
from .made import MADE  # noqa: F401
from .wavenet import WaveNet  # noqa: F401
from .parallel_wavenet import ParallelWaveNet  # noqa: F401
from .pixelcnn import PixelCNN  # noqa: F401
from .gated_pixelcnn import GatedPixelCNN  # noqa: F401
from .pixelcnn_pp import PixelCNNPP  # noqa: F401
from .pixelrnn import PixelRNN  # noqa: F401
