"""Our BERT encoder against transformers' ``BertModel`` on a small random checkpoint.

Padding must not change a sequence's states: a batch of ragged inputs gives each
real token the same hidden state as running that input alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig as HFBertConfig
from transformers import BertModel

from levant.embeddings.encoder import SentenceEncoder
from levant.embeddings.head import SentenceHead
from levant.models.bert import build_bert
from levant.models.loaders.bert_hf import load_bert

ATOL = 1e-5


def hf_config(hidden_act: str = "gelu") -> HFBertConfig:
    return HFBertConfig(
        vocab_size=300,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_act=hidden_act,
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )


@pytest.fixture(scope="module", params=["gelu", "gelu_new"])
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BertModel, Path]:
    torch.manual_seed(0)
    model = BertModel(hf_config(request.param)).eval()
    path = tmp_path_factory.mktemp(f"bert-{request.param}")
    model.save_pretrained(path)
    return model, path


def ragged_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    lengths = [7, 19, 2, 12]
    tokens = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for row, n in enumerate(lengths):
        tokens[row, :n] = torch.randint(1, 300, (n,), generator=g)
        mask[row, :n] = 1
    return tokens, mask


def test_hidden_states_match_transformers(reference: tuple[BertModel, Path]) -> None:
    hf, path = reference
    config, weights = load_bert(path)
    assert config.n_layers == 3 and config.dim == 48 and config.max_position == 40
    ours = build_bert(config, weights)
    tokens, mask = ragged_batch()
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=mask).last_hidden_state
        got = ours(tokens, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_padding_does_not_change_a_sequence(reference: tuple[BertModel, Path]) -> None:
    _, path = reference
    ours = build_bert(*load_bert(path))
    tokens, mask = ragged_batch()
    with torch.no_grad():
        batched = ours(tokens, mask)
        for row in range(tokens.shape[0]):
            n = int(mask[row].sum())
            alone = ours(tokens[row : row + 1, :n], mask[row : row + 1, :n])
            torch.testing.assert_close(batched[row, :n], alone[0], atol=ATOL, rtol=0)


def test_sentence_encoder_mean_pools_real_tokens_only(reference: tuple[BertModel, Path]) -> None:
    hf, path = reference
    encoder = SentenceEncoder(build_bert(*load_bert(path)), SentenceHead("mean", normalize=True))
    tokens, mask = ragged_batch()
    rows = [tokens[r, : int(mask[r].sum())].tolist() for r in range(tokens.shape[0])]
    with torch.no_grad():
        h = hf(input_ids=tokens, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(encoder(rows), expected, atol=ATOL, rtol=0)


def test_longer_than_positions_is_refused(reference: tuple[BertModel, Path]) -> None:
    _, path = reference
    ours = build_bert(*load_bert(path))
    tokens = torch.ones((1, 41), dtype=torch.long)
    with pytest.raises(ValueError, match="41 tokens exceed the 40 positions"):
        ours(tokens, torch.ones_like(tokens))


def test_unknown_tensors_are_rejected(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = BertModel(hf_config())
    model.save_pretrained(tmp_path)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights["encoder.layer.0.adapter.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor 'encoder\.layer\.0\.adapter\.weight'"):
        load_bert(tmp_path)
