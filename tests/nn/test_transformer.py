"""Transformer encoder/decoder layers and stacks: torch state_dicts load, outputs match."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.testing import gradcheck
from helpers import HAVE_TORCH

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


def _load(g, t):
    assert sorted(g.state_dict()) == sorted(t.state_dict())
    g.load_state_dict({k: gm.tensor(v.detach().numpy()) for k, v in t.state_dict().items()})


def _np(x):
    return x.detach().numpy()


@needs_torch
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_encoder_matches_torch(batch_first, norm_first, activation):
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation, batch_first=batch_first,
              norm_first=norm_first)
    t = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, **kw).double(), 2,
                                    norm=torch.nn.LayerNorm(8).double(),
                                    enable_nested_tensor=False)
    g = gm.nn.TransformerEncoder(gm.nn.TransformerEncoderLayer(8, 2, dtype=gm.float64, **kw), 2,
                                 norm=gm.nn.LayerNorm(8, dtype=gm.float64))
    _load(g, t)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 8) if batch_first else (5, 3, 8))
    kpm = np.zeros((3, 5), bool)
    kpm[0, 3:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    gcausal = gm.nn.generate_square_subsequent_mask(5, dtype=gm.float64)
    np.testing.assert_array_equal(gcausal.numpy(), causal.numpy())
    cases = [({}, {}), ({"mask": causal}, {"mask": gcausal}),
             ({"src_key_padding_mask": torch.tensor(kpm)},
              {"src_key_padding_mask": gm.tensor(kpm)}),
             ({"mask": causal, "is_causal": True}, {"is_causal": True})]  # mask built here
    for tkw, gkw in cases:
        np.testing.assert_allclose(_np(g(gm.tensor(x), **gkw)), _np(t(torch.tensor(x), **tkw)),
                                   atol=1e-12)
    # a single layer, unbatched input, bool attention mask
    bmask = np.triu(np.ones((5, 5), bool), 1)
    tl, gl = t.layers[0], g.layers[0]
    xu = x[0] if batch_first else x[:, 0]
    np.testing.assert_allclose(_np(gl(gm.tensor(xu), src_mask=gm.tensor(bmask))),
                               _np(tl(torch.tensor(xu), src_mask=torch.tensor(bmask))),
                               atol=1e-12)


@needs_torch
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_matches_torch(norm_first):
    torch.manual_seed(1)
    kw = dict(dim_feedforward=12, dropout=0.0, batch_first=True, norm_first=norm_first)
    t = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(6, 3, **kw).double(), 2)
    g = gm.nn.TransformerDecoder(gm.nn.TransformerDecoderLayer(6, 3, dtype=gm.float64, **kw), 2)
    _load(g, t)
    rng = np.random.default_rng(1)
    tgt, mem = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 7, 6))
    mkpm = np.zeros((2, 7), bool)
    mkpm[1, 5:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    want = t(torch.tensor(tgt), torch.tensor(mem), tgt_mask=causal,
             memory_key_padding_mask=torch.tensor(mkpm))
    got = g(gm.tensor(tgt), gm.tensor(mem), tgt_is_causal=True,
            memory_key_padding_mask=gm.tensor(mkpm))
    np.testing.assert_allclose(_np(got), _np(want), atol=1e-12)


def test_layer_gradients_and_defaults():
    layer = gm.nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0,
                                          activation="gelu", dtype=gm.float64)
    x = gm.tensor(np.random.default_rng(0).normal(size=(3, 2, 4)), requires_grad=True)
    assert gradcheck(lambda a: layer(a), [x])
    g = gm.nn.TransformerEncoderLayer(4, 2)
    assert g.linear1.weight.shape == (2048, 4)  # torch's defaults: dim_feedforward=2048, dropout 0.1
    assert g.dropout.p == 0.1
    with pytest.raises(RuntimeError, match="activation should be"):
        gm.nn.TransformerEncoderLayer(4, 2, activation="swish")
    with pytest.raises(ValueError, match="num_layers"):
        gm.nn.TransformerEncoder(g, 0)
    stack = gm.nn.TransformerEncoder(g, 2)
    assert stack.layers[0].linear1.weight is not stack.layers[1].linear1.weight
