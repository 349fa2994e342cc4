"""The decoder's MLPs, chosen by `mlp_class_name` (litgpt's names): GELU (GPT-2) or gated SiLU / GELU (Llama's
SwiGLU, Gemma's GeGLU). The gated ones hold the gate and up projections in one Linear, `c_fc` = [gate; up]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import CaptionerConfig


class MLP(nn.Module):
    """GptNeoxMLP: c_fc -> GELU -> c_proj (GPT-2's, nanoGPT's names)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        hidden = config.mlp_size()
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class GatedMLP(nn.Module):
    """LLaMAMLP / GemmaMLP: c_proj(act(gate) * up), [gate; up] = c_fc(x); act is SiLU or GELU."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        hidden = config.mlp_size()
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.gelu = config.mlp_class_name == "GemmaMLP"
        self.approximate = config.gelu_approximate
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)  # each (B, T, hidden)
        act = F.gelu(gate, approximate=self.approximate) if self.gelu else F.silu(gate)
        return self.dropout(self.c_proj(act * up))


def make_mlp(config: CaptionerConfig) -> nn.Module:
    return MLP(config) if config.mlp_class_name == "GptNeoxMLP" else GatedMLP(config)
