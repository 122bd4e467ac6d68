"""The credit MLP: one-hot encoding inside a TorchScript module.

``CreditMLP`` takes the published encoding, FP32 ``[n, 20]``, one-hot encodes the
categorical columns (codes offset into one wide vector and scattered), standardises
the numeric columns with training statistics, and returns ``(label INT64 [n],
probabilities FP32 [n, 2])``. A code outside its category list raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from examples.credit.encoding import CATEGORICAL_INDICES, CATEGORIES, FEATURE_NAMES, NUMERIC_INDICES

__all__ = ["CreditMLP", "fit_mlp", "predict_label", "save"]

EPOCHS = 25
BATCH = 64


class CreditMLP(nn.Module):
    """One-hot + standardise -> Linear(hidden) -> ReLU -> Linear(2) -> softmax."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int = 16) -> None:
        super().__init__()
        sizes = [len(CATEGORIES[FEATURE_NAMES[i]]) for i in CATEGORICAL_INDICES]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.register_buffer("cat_index", torch.tensor(CATEGORICAL_INDICES, dtype=torch.long))
        self.register_buffer("num_index", torch.tensor(NUMERIC_INDICES, dtype=torch.long))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.n_onehot = int(sum(sizes))
        self.net = nn.Sequential(
            nn.Linear(self.n_onehot + len(NUMERIC_INDICES), hidden), nn.ReLU(),
            nn.Linear(hidden, 2),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """FP32 ``[n, 2]`` logits of the encoded rows ``x`` FP32 ``[n, 20]``."""
        codes = x.index_select(1, self.cat_index).long() + self.offsets
        onehot = torch.zeros(x.shape[0], self.n_onehot, dtype=x.dtype, device=x.device)
        onehot.scatter_(1, codes, 1.0)
        numeric = (x.index_select(1, self.num_index) - self.mean) / self.std
        return self.net(torch.cat([onehot, numeric], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.logits(x), dim=1)
        return probabilities.argmax(dim=1), probabilities


def fit_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0) -> CreditMLP:
    """Train a few epochs of Adam on cross-entropy, seeded; returns the eval-mode module."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    numeric = xt[:, NUMERIC_INDICES]
    module = CreditMLP(numeric.mean(0), numeric.std(0))
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        for rows in torch.randperm(len(yt), generator=generator).split(BATCH):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(module.logits(xt[rows]), yt[rows])
            loss.backward()
            optimiser.step()
    return module.eval()


def predict_label(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """INT64 ``[n]`` labels of the module for encoded rows ``x``."""
    with torch.inference_mode():
        return module(torch.from_numpy(x))[0].numpy()


def save(module: CreditMLP, path: Path) -> Path:
    """``torch.jit.script`` and ``torch.jit.save`` the module to ``path``."""
    torch.jit.save(torch.jit.script(module), str(path))
    return path
