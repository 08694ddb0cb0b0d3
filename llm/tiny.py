"""Tiny random-init causal LMs and a locally trained byte-level BPE tokenizer.

Shared by the CLI (``--model tiny-gpt2`` / ``tiny-llama``: runs out of the box, no download) and
the tests. The tokenizer has a BOS token added by ``tokenizer(text)``, an EOS ``<|end|>`` that ends
every chat turn, a pad token, and a chat template that starts with BOS::

    <|bos|><|user|>\\n{prompt}<|end|>\\n<|assistant|>\\n{response}<|end|>\\n
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers is imported when a model is built: config errors come fast
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

TINY_MODELS = ("tiny-gpt2", "tiny-llama")
MAX_POSITIONS = 1024
SPECIALS = ("<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes) trained on ``texts``; deterministic for fixed input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", bos_id)]
    )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    out.chat_template = CHAT_TEMPLATE
    return out


def build_model(
    kind: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0, size: int = 64
) -> PreTrainedModel:
    """A random-init ``tiny-gpt2`` or ``tiny-llama`` (2 layers, width ``size``), dropout off."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if kind == "tiny-gpt2":
        cfg = GPT2Config(
            n_embd=size,
            n_layer=2,
            n_head=2,
            n_positions=MAX_POSITIONS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
        model = GPT2LMHeadModel(cfg)
    elif kind == "tiny-llama":
        cfg = LlamaConfig(
            hidden_size=size,
            intermediate_size=2 * size,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            tie_word_embeddings=False,
            **common,
        )
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown tiny model {kind!r}; choose from {list(TINY_MODELS)}")
    return model.float()
