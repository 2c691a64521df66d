"""IPT's intrinsic task subspace (Qin et al., §3.2 MSF and §3.3 IST).

MSF trains an autoencoder over the flattened soft prompts of the training tasks: encoder
Linear(P*H -> d_I), decoder Linear(d_I -> H) -> tanh -> Linear(H -> P*H), every weight N(0, 0.02),
biases 0 (the paper's code). IST keeps only the decoder, frozen, and tunes one vector v in R^{d_I} per
task (init N(0, 0.02)); the prompt is decoder(v). The random-subspace baseline is an untrained decoder.

    ae = PromptAutoencoder(prompt_len=20, hidden=384, d_intrinsic=5)
    recon = ae(prompt)                    # (P, H) -> (P, H)
    v = IntrinsicVector(5); p = ae.decoder(v())
"""
from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=INIT_STD)
            nn.init.zeros_(m.bias)


class PromptDecoder(nn.Module):
    """d_I -> (P, H): Linear(d_I -> H) -> tanh -> Linear(H -> P*H)."""

    def __init__(self, prompt_len: int, hidden: int, d_intrinsic: int):
        super().__init__()
        self.prompt_len, self.hidden, self.d_intrinsic = prompt_len, hidden, d_intrinsic
        self.net = nn.Sequential(nn.Linear(d_intrinsic, hidden), nn.Tanh(), nn.Linear(hidden, prompt_len * hidden))
        _init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], self.prompt_len, self.hidden)  # (..., d_I) -> (..., P, H)


class PromptAutoencoder(nn.Module):
    """Encoder Linear(P*H -> d_I) and :class:`PromptDecoder`: prompt (..., P, H) -> reconstruction (..., P, H)."""

    def __init__(self, prompt_len: int, hidden: int, d_intrinsic: int):
        super().__init__()
        self.encoder = nn.Linear(prompt_len * hidden, d_intrinsic)
        self.decoder = PromptDecoder(prompt_len, hidden, d_intrinsic)
        _init(self.encoder)

    def encode(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.encoder(prompt.flatten(-2))  # (..., P, H) -> (..., d_I)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(prompt))


class IntrinsicVector(nn.Module):
    """The d_I numbers IST tunes for one task (init N(0, 0.02))."""

    def __init__(self, d_intrinsic: int):
        super().__init__()
        self.v = nn.Parameter(torch.randn(d_intrinsic) * INIT_STD)

    def forward(self) -> torch.Tensor:
        return self.v
