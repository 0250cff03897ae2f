"""The CME teacher: the reference's one-layer LSTM over a 40-point clathrin trace.

Architecture as in the AWD reference (``awave.models.LSTMNet``): LSTM with input size 1 and
hidden size 20 (batch-first), the last hidden state feeds ``Linear(20, k)``. The module takes
(B, L) traces and adds the feature axis itself, as the domain contract asks. Its gates are
sigmoid/tanh, so the teacher is not piecewise linear: the exact TRIM saliency penalty needs
double back-propagation through the LSTM (the precomputed-input-gradient shortcut is only an
approximation for it).
"""
from __future__ import annotations

import torch
from torch import nn


class LSTMNet(nn.Module):
    """One-layer LSTM (input 1, ``hidden_size`` units) -> last hidden state -> Linear(hidden, n_outputs)."""

    def __init__(self, hidden_size: int = 20, n_outputs: int = 1):
        super().__init__()
        if hidden_size < 1 or n_outputs < 1:
            raise ValueError(f"LSTMNet: hidden_size {hidden_size} and n_outputs {n_outputs} must be >= 1")
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden_size, num_layers=1, batch_first=True)
        self.fc = nn.Linear(hidden_size, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) or (B, L, 1) traces -> (B, n_outputs)."""
        if x.ndim == 2:
            x = x.unsqueeze(-1)
        if x.ndim != 3 or x.shape[-1] != 1:
            raise ValueError(f"LSTMNet: expected input (B, L) or (B, L, 1), got {tuple(x.shape)}")
        _, (h_n, _) = self.lstm(x)
        return self.fc(h_n[-1])


def build_lstm(n_outputs: int = 1, hidden_size: int = 20, seed: int = 0) -> LSTMNet:
    """A freshly initialised LSTMNet whose weights depend only on ``seed``."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return LSTMNet(hidden_size=hidden_size, n_outputs=n_outputs)
    finally:
        torch.random.set_rng_state(gen_state)
