"""Neural-network building blocks: ``Module``, ``Parameter``, layers, ``init``.

``gmcore.nn.functional`` (imported as ``F``) holds the stateless ops the layers call.
"""
from . import functional  # noqa: F401
from . import utils  # noqa: F401
from . import gan  # noqa: F401
from .parameter import Parameter, Buffer  # noqa: F401
from .module import Module  # noqa: F401
from .container import Identity, Sequential, ModuleList, ModuleDict, ParameterList  # noqa: F401
# layers
from . import init  # noqa: F401
from .linear import Linear, Bilinear  # noqa: F401
from .masked_linear import MaskedLinear  # noqa: F401
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
from .conv import Conv3d, ConvTranspose3d  # noqa: F401
from .masked_conv import (MaskedConv2d, DownShiftedConv2d, DownRightShiftedConv2d,  # noqa: F401
                          DownShiftedConvTranspose2d, DownRightShiftedConvTranspose2d, CausalConv1d)
from .embedding import Embedding  # noqa: F401
from .normalization import LayerNorm, GroupNorm, BatchNorm1d, BatchNorm2d  # noqa: F401
from .normalization import InstanceNorm1d, InstanceNorm2d  # noqa: F401
from .sync_batchnorm import SyncBatchNorm  # noqa: F401
from .dropout import Dropout, Dropout1d, Dropout2d  # noqa: F401
from .activation import (ReLU, ReLU6, LeakyReLU, ELU, GELU, SiLU, Mish, Sigmoid, Tanh,  # noqa: F401
                         Softplus, Softsign, LogSigmoid, Hardtanh, Softmax, LogSoftmax)
from .activation import Hardswish, CELU  # noqa: F401
from .flatten import Flatten, Unflatten  # noqa: F401
from .vision import Upsample, PixelShuffle, PixelUnshuffle  # noqa: F401
from .pooling import (MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d,  # noqa: F401
                      AdaptiveAvgPool1d, AdaptiveAvgPool2d)
from .rnn import RNNCellBase, RNNCell, LSTMCell, GRUCell, RNNBase, RNN, LSTM, GRU  # noqa: F401
from .attention import MultiheadAttention, SelfAttention2d  # noqa: F401
from .self_attention import SAGANSelfAttention  # noqa: F401
from .conditional_norm import ConditionalBatchNorm2d, LinearConditionalBatchNorm2d  # noqa: F401
from .transformer import (TransformerEncoderLayer, TransformerEncoder,  # noqa: F401
                          TransformerDecoderLayer, TransformerDecoder,
                          generate_square_subsequent_mask)
from .vq import VectorQuantizer  # noqa: F401
from .flows import ActNorm2d, InvConv2d1x1  # noqa: F401
from .wavenet import WaveNetBlock, WaveNetStack, CausalEmbedding, WaveNetGenerationState  # noqa: F401
from .pixel_rnn import skew, unskew, RowLSTM, DiagonalLSTM, DiagonalBiLSTM  # noqa: F401
from . import style  # noqa: F401
from .style import (EqualLinear, EqualConv2d, PixelNorm, MinibatchStdDev, NoiseInjection,  # noqa: F401
                    ModulatedConv2d)
