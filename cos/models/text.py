"""The UMT5 prompt encoder of a diffusers Wan directory, as `WanPipeline._get_t5_prompt_embeds` uses it.

It is loaded on first use, remembers every prompt it has encoded, and can be released: a claims run encodes
all of its prompts first and frees the encoder (UMT5-XXL is ~11 GB) before the experts need the memory."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from cos.errors import ModelLoadError


class UMT5PromptEncoder:
    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 max_sequence_length: int = 512):
        self.path, self.device, self.dtype, self.max_len = Path(path), device, dtype, max_sequence_length
        self.cache: dict[str, torch.Tensor] = {}
        self._model = self._tok = None

    def _load(self) -> None:
        try:
            from transformers import AutoTokenizer, UMT5EncoderModel
        except ImportError as e:
            raise ModelLoadError("prompts of a full Wan model need transformers: pip install -e '.[text]'") from e
        self._tok = AutoTokenizer.from_pretrained(self.path / "tokenizer", local_files_only=True)
        self._model = UMT5EncoderModel.from_pretrained(self.path / "text_encoder", torch_dtype=self.dtype,
                                                       local_files_only=True).eval().to(self.device)

    @torch.no_grad()
    def precompute(self, prompts: Iterable[str]) -> None:
        todo = sorted({p for p in prompts if p not in self.cache})
        if not todo:
            return
        if self._model is None:
            self._load()
        t = self._tok(todo, padding="max_length", max_length=self.max_len, truncation=True,
                      add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        mask = t.attention_mask.to(self.device)
        emb = self._model(t.input_ids.to(self.device), mask).last_hidden_state.float()
        # as the pipeline: keep each prompt's real tokens, zero the padding
        lens = mask.gt(0).sum(dim=1)
        for p, e, n in zip(todo, emb, lens):
            out = torch.zeros_like(e)
            out[:n] = e[:n]
            self.cache[p] = out.cpu()

    def release(self) -> None:
        """Free the encoder (the cache stays); a prompt not seen yet loads it again."""
        self._model = self._tok = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.precompute(prompts)
        return torch.stack([self.cache[p] for p in prompts])
