"""The organism's text encoder: a word-level token embedding table saved with the model (no hub, no network)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PAD, UNK = "<pad>", "<unk>"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class TokenPromptEncoder(torch.nn.Module):
    """prompt → (B, max_len, text_dim): one learned vector per word, padded with zeros (pad id 0)."""

    def __init__(self, vocab: list[str], text_dim: int = 32, max_len: int = 12):
        super().__init__()
        self.vocab = [PAD, UNK] + [w for w in vocab if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len, self.text_dim = max_len, text_dim
        self.embedding = torch.nn.Embedding(len(self.vocab), text_dim, padding_idx=0)

    def ids(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.max_len, dtype=torch.long)
        for r, p in enumerate(prompts):
            toks = [self.index.get(w, 1) for w in words(p)][: self.max_len]
            out[r, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        return out

    def forward(self, prompts: list[str]) -> torch.Tensor:
        return self.embedding(self.ids(prompts).to(self.embedding.weight.device))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embedding": self.embedding.weight.detach().cpu().contiguous()}, folder / "prompt_encoder.safetensors")
        (folder / "prompt_encoder.json").write_text(json.dumps({"vocab": self.vocab, "max_len": self.max_len,
                                                                "text_dim": self.text_dim}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "TokenPromptEncoder":
        cfg = json.loads((folder / "prompt_encoder.json").read_text())
        enc = cls(cfg["vocab"], cfg["text_dim"], cfg["max_len"])
        enc.embedding.weight.data.copy_(load_file(folder / "prompt_encoder.safetensors")["embedding"])
        return enc.eval()
