"""Personalized reranking: the cross-encoder's reading of (query, product) fused with a feature
tower over the shopper's behaviour, into one logit.

    logit = a * cross_score + b  +  has_history * tower(features)

The relevance part is an affine map of the cross-encoder score (so it keeps its order), and the
personal part is an MLP with dropout over :data:`personalization.features.FEATURE_NAMES`, gated by
``has_history``: for a shopper with no history it is exactly 0 and the ranking is the
relevance-only ranking. Trained with binary cross-entropy on clicks and purchases (and, optionally,
graded relevance pairs for the relevance part), AdamW with weight decay, early stopping on a
validation IPS-DCG@10 of the logged interactions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import ShopsearchError
from personalization.clickstats import FILE as CLICK_FILE
from personalization.clickstats import ClickStats
from personalization.features import FEATURE_NAMES

HAS_HISTORY = FEATURE_NAMES.index("has_history")
#: A feature whose standard deviation over the warm training rows is at most this never varied
#: in training: the model learned nothing about it, so it is ignored (not amplified by
#: ``1 / std``) when serving gives it values (a catalog with brands the training log had none of).
STD_FLOOR = 1e-3
FORMAT = "shopsearch-personal/v1"


class PersonalFusion(nn.Module):
    """One logit from a cross-encoder score and behaviour features."""

    def __init__(
        self, n_features: int = len(FEATURE_NAMES), hidden: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.rel = nn.Linear(1, 1)
        with torch.no_grad():
            self.rel.weight.fill_(1.0)
            self.rel.bias.zero_()
        self.tower = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.hidden = hidden
        self.dropout = dropout

    def parts(self, cross: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevance part, personalization part), each of shape (n,)."""
        rel = self.rel(cross.unsqueeze(-1)).squeeze(-1)
        has = feats[:, HAS_HISTORY]
        z = (feats - self.mean) / self.std * (self.std > STD_FLOOR)
        personal = has * self.tower(z).squeeze(-1)
        return rel, personal

    def forward(self, cross: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        rel, personal = self.parts(cross, feats)
        return rel + personal


@dataclass(frozen=True)
class Scored:
    """Scores of candidates for one search, with what moved each one."""

    relevance: np.ndarray
    personal: np.ndarray
    contributions: (
        np.ndarray
    )  # (n, n_features): personal(x) - personal(x with feature j at its mean)

    @property
    def total(self) -> np.ndarray:
        """The fused logit."""
        return self.relevance + self.personal


class PersonalRanker:
    """A trained :class:`PersonalFusion` with save/load and explanations.

    Attributes:
        click_stats: The log's click counts per (query, product) it was trained from, read
            for the ``query_coec``/``query_exposure`` features (None: those features are 0).
    """

    def __init__(
        self,
        model: PersonalFusion,
        meta: dict | None = None,
        click_stats: ClickStats | None = None,
    ) -> None:
        self.model = model.eval()
        self.meta = meta or {}
        self.click_stats = click_stats

    def click_features(self, query: str | None, product_ids: Sequence[str]) -> np.ndarray | None:
        """``query_coec`` and ``query_exposure`` of products for a query ``(n, 2)``, with the
        examination curve the model was trained with; None without a query or counts."""
        if self.click_stats is None or not query:
            return None
        theta = self.meta.get("propensity") or None
        return self.click_stats.features(query, product_ids, theta)

    @torch.inference_mode()
    def score(self, cross: np.ndarray, feats: np.ndarray, explain: bool = False) -> Scored:
        """Relevance and personalization parts (and per-feature contributions when asked)."""
        c = torch.as_tensor(np.asarray(cross, dtype=np.float32))
        x = torch.as_tensor(np.asarray(feats, dtype=np.float32))
        rel, personal = self.model.parts(c, x)
        contributions = np.zeros(x.shape, dtype=np.float32)
        if explain and x.shape[0]:
            n, f = x.shape
            occluded = x.unsqueeze(1).repeat(1, f, 1)  # (n, f, f): row j has feature j at its mean
            idx = torch.arange(f)
            occluded[:, idx, idx] = self.model.mean[idx]
            occluded[:, :, HAS_HISTORY] = x[:, HAS_HISTORY].unsqueeze(1)  # keep the gate
            _, p_occ = self.model.parts(c.repeat_interleave(f), occluded.reshape(n * f, f))
            contributions = (personal.unsqueeze(1) - p_occ.reshape(n, f)).numpy()
            contributions[:, HAS_HISTORY] = 0.0
        return Scored(rel.numpy(), personal.numpy(), contributions)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Writes weights and a small JSON description."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / "personal.pt")
        if self.click_stats is not None:
            self.click_stats.save(out)
        elif (out / CLICK_FILE).exists():
            (out / CLICK_FILE).unlink()
        meta = {
            "format": FORMAT,
            "features": list(FEATURE_NAMES),
            "hidden": self.model.hidden,
            "dropout": self.model.dropout,
            **self.meta,
            "click_stats": self.click_stats is not None,
        }
        (out / "personal.json").write_text(json.dumps(meta, indent=1, default=str))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PersonalRanker:
        """Reads a folder written by :meth:`save`.

        Raises:
            ShopsearchError: Not such a folder, another feature set or format, or a model
                ``train personal`` marked ``beats_baseline: false`` (it did not beat
                relevance-only ranking on validation) and not ``forced``: serving it would
                personalize with no evidence that it helps.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "personal.json").read_text())
        except (OSError, ValueError) as exc:
            raise ShopsearchError(f"{path}: not a personalization model folder ({exc})") from exc
        if meta.get("format") != FORMAT or tuple(meta.get("features", ())) != FEATURE_NAMES:
            raise ShopsearchError(
                f"{path}: built for another feature set or format ({meta.get('format')}); retrain it"
            )
        if meta.get("beats_baseline") is False and not meta.get("forced"):
            val = meta.get("validation") or {}
            raise ShopsearchError(
                f"{path}: this personalization model did not beat relevance-only ranking on its "
                "validation searches (IPS-DCG@10 "
                f"{val.get('baseline_ips_dcg@10', float('nan')):.4f} -> "
                f"{val.get('best_ips_dcg@10', float('nan')):.4f}): retrain it on a longer log, "
                "or with 'train personal --force' to serve it anyway"
            )
        model = PersonalFusion(len(FEATURE_NAMES), meta["hidden"], meta["dropout"])
        model.load_state_dict(
            torch.load(path / "personal.pt", map_location="cpu", weights_only=True)
        )
        clicks = ClickStats.load(path) if meta.get("click_stats") else None
        return cls(model, meta, clicks)
