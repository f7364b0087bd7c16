"""Checkpoint loaders against transformers' Mistral / Llama on small random models.

Each reference model is saved as an HF directory; the Mistral one is also converted to
Mistral's consolidated format. Both must load through ``load_checkpoint`` and reproduce
the reference logits and greedy decode (past the sliding window) with our KV cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from levant.models.config import RopeScaling
from levant.models.loaders import load_checkpoint
from levant.models.transformer import KVCache, Transformer, build_model

WINDOW = 8
SEQ_LEN = 24
ATOL = 1e-4


def mistral_config(sliding_window: int | None = WINDOW) -> MistralConfig:
    return MistralConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # n_heads * head_dim != hidden_size, as in Mistral Nemo
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        sliding_window=sliding_window,
        initializer_range=0.1,  # sharper attention than the default 0.02
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )


def llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=700,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            # Small enough that all three frequency bands occur with head_dim 16.
            "original_max_position_embeddings": 16,
        },
        initializer_range=0.1,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )


def seeded(model_cls: type[torch.nn.Module], config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_cls(config).eval()


def prompt(vocab: int, length: int = SEQ_LEN) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(7))


def to_consolidated(hf_dir: Path, out: Path) -> None:
    """Write Mistral's consolidated format from an HF Mistral directory.

    The inverse of HF's rotary permute: HF rows (half-split) back to interleaved pairs.
    """
    cfg = json.loads((hf_dir / "config.json").read_text())
    model = MistralForCausalLM.from_pretrained(hf_dir)
    head_dim = cfg["head_dim"]

    def interleave(w: torch.Tensor, n_heads: int) -> torch.Tensor:
        # (n_heads, [first half | second half], head_dim // 2, in) -> pairs (i, head_dim//2 + i)
        return w.view(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)

    names = {
        "input_layernorm": "attention_norm",
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
    }
    hf = model.state_dict()
    weights = {
        "tok_embeddings.weight": hf["model.embed_tokens.weight"],
        "norm.weight": hf["model.norm.weight"],
        "output.weight": hf["lm_head.weight"],
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf_name, name in names.items():
            w = hf[f"model.layers.{i}.{hf_name}.weight"]
            if name == "attention.wq":
                w = interleave(w, cfg["num_attention_heads"])
            elif name == "attention.wk":
                w = interleave(w, cfg["num_key_value_heads"])
            weights[f"layers.{i}.{name}.weight"] = w
    out.mkdir()
    save_file({k: v.contiguous() for k, v in weights.items()}, out / "consolidated.safetensors")
    params = {
        "dim": cfg["hidden_size"],
        "n_layers": cfg["num_hidden_layers"],
        "head_dim": head_dim,
        "hidden_dim": cfg["intermediate_size"],
        "n_heads": cfg["num_attention_heads"],
        "n_kv_heads": cfg["num_key_value_heads"],
        "norm_eps": cfg["rms_norm_eps"],
        "vocab_size": cfg["vocab_size"],
        "rope_theta": cfg["rope_parameters"]["rope_theta"],
        "sliding_window": [cfg["sliding_window"]] * cfg["num_hidden_layers"],
        "max_seq_len": cfg["max_position_embeddings"],
    }
    (out / "params.json").write_text(json.dumps(params))


def greedy(model: Transformer, tokens: torch.Tensor, n: int) -> tuple[list[int], torch.Tensor]:
    """Greedy decode with the KV cache; returns new tokens and their (n, vocab) logits."""
    cache = KVCache.allocate(model.config, 1, tokens.shape[1] + n, torch.float32, tokens.device)
    logits = model(tokens, 0, cache)[:, -1]
    out, steps = [], []
    for _ in range(n):
        steps.append(logits[0])
        nxt = int(logits.argmax(-1))
        out.append(nxt)
        logits = model(torch.tensor([[nxt]]), tokens.shape[1] + len(out) - 1, cache)[:, -1]
    return out, torch.stack(steps)


@pytest.fixture(scope="module")
def mistral_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    root = tmp_path_factory.mktemp("mistral")
    reference = seeded(MistralForCausalLM, mistral_config())
    reference.save_pretrained(root / "hf")
    to_consolidated(root / "hf", root / "consolidated")
    return reference, root / "hf", root / "consolidated"


def test_reference_applies_the_sliding_window(
    mistral_dirs: tuple[torch.nn.Module, Path, Path],
) -> None:
    reference, _, _ = mistral_dirs
    unbounded = seeded(MistralForCausalLM, mistral_config(sliding_window=None))
    tokens = prompt(1000)
    with torch.no_grad():
        a, b = reference(tokens).logits, unbounded(tokens).logits
    torch.testing.assert_close(a[:, :WINDOW], b[:, :WINDOW])
    assert (a[:, WINDOW:] - b[:, WINDOW:]).abs().amax() > 1e-2


@pytest.mark.parametrize("fmt", ["hf", "consolidated"])
def test_mistral_matches_reference(
    mistral_dirs: tuple[torch.nn.Module, Path, Path], fmt: str
) -> None:
    reference, hf_dir, consolidated_dir = mistral_dirs
    config, weights = load_checkpoint(hf_dir if fmt == "hf" else consolidated_dir)
    assert config.sliding_window == WINDOW and config.head_dim == 32
    assert config.rope_theta == 1e6 and not config.tie_embeddings
    model = build_model(config, weights)
    tokens = prompt(config.vocab_size)
    with torch.no_grad():
        expected = reference(tokens).logits
        torch.testing.assert_close(model(tokens, 0), expected, atol=ATOL, rtol=0)

        # Greedy decode from a 6-token prompt to 6 + 20 tokens: well past the window.
        start = tokens[:, :6]
        ours, our_logits = greedy(model, start, 20)
        ref = reference.generate(
            start,
            max_new_tokens=20,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert ours == ref.sequences[0, 6:].tolist()
    torch.testing.assert_close(our_logits, torch.cat(ref.logits), atol=ATOL, rtol=0)


def test_llama_tied_llama3_rope_sharded(tmp_path: Path) -> None:
    reference = seeded(LlamaForCausalLM, llama_config())
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()

    config, weights = load_checkpoint(tmp_path)
    assert config.tie_embeddings and "output.weight" not in weights
    assert config.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 16)
    assert config.rope_theta == 500000.0 and config.n_kv_heads == 1
    model = build_model(config, weights)
    tokens = prompt(config.vocab_size, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, 0), reference(tokens).logits, atol=ATOL, rtol=0)
        ours, _ = greedy(model, tokens[:, :4], 12)
        ref = reference.generate(tokens[:, :4], max_new_tokens=12, do_sample=False)
    assert ours == ref[0, 4:].tolist()


def test_unknown_layouts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "a.gguf").touch()
    (tmp_path / "b.gguf").touch()
    with pytest.raises(ValueError, match=r"2 \.gguf files"):
        load_checkpoint(tmp_path)


def test_unsupported_hf_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        load_checkpoint(tmp_path)


def write_llama_gguf(reference: LlamaForCausalLM, path: Path) -> None:
    """Write ``reference`` as llama.cpp would: interleaved q/k, rope_freqs for llama3.

    token_embd is stored Q8_0 and the MLP F16; ``reference`` is rounded to match, so the
    comparison below tests loading, not quantization error.
    """
    cfg = reference.config
    rope = cfg.rope_parameters
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])

    def store(name: str, w: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> None:
        data = w.detach().numpy()
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
            return
        raw = data.astype(np.float16) if qtype == gguf.GGMLQuantizationType.F16 else None
        raw = gguf.quants.quantize(data, qtype) if raw is None else raw
        writer.add_tensor(name, raw, raw_dtype=qtype)
        w.copy_(torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(w.shape)))

    def interleave(w: torch.Tensor, n_heads: int) -> torch.Tensor:  # convert_hf_to_gguf permute
        return w.view(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)

    # rope_freqs as convert_hf_to_gguf computes them: the divisor of each frequency.
    inv_freq = reference.model.rotary_emb.inv_freq
    plain = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    f32, f16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
    with torch.no_grad():
        store("rope_freqs.weight", plain / inv_freq, f32)
        store(
            "token_embd.weight", reference.model.embed_tokens.weight, gguf.GGMLQuantizationType.Q8_0
        )
        store("output_norm.weight", reference.model.norm.weight, f32)
        store("output.weight", reference.lm_head.weight, f32)
        for i, layer in enumerate(reference.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            store(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight, f32)
            q = interleave(attn.q_proj.weight, cfg.num_attention_heads)
            k = interleave(attn.k_proj.weight, cfg.num_key_value_heads)
            store(f"blk.{i}.attn_q.weight", q, f32)
            store(f"blk.{i}.attn_k.weight", k, f32)
            store(f"blk.{i}.attn_v.weight", attn.v_proj.weight, f32)
            store(f"blk.{i}.attn_output.weight", attn.o_proj.weight, f32)
            store(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight, f32)
            store(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight, f16)
            store(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight, f16)
            store(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight, f16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_untied_llama3_rope_freqs(tmp_path: Path) -> None:
    config = llama_config()
    config.tie_word_embeddings = False
    reference = seeded(LlamaForCausalLM, config)
    write_llama_gguf(reference, tmp_path / "tiny.gguf")

    loaded, weights = load_checkpoint(tmp_path)  # a directory holding one .gguf
    assert not loaded.tie_embeddings and "output.weight" in weights
    assert loaded.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 16)
    model = build_model(loaded, weights)
    tokens = prompt(loaded.vocab_size, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, 0), reference(tokens).logits, atol=ATOL, rtol=0)
