"""Training the personal ranker (:class:`personalization.ranker.PersonalFusion`) on logged searches.

Binary cross-entropy on clicks and purchases (and, optionally, graded relevance pairs for the
relevance part), AdamW with weight decay, early stopping on a validation IPS-DCG@10 of the
logged interactions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import ShopsearchError
from personalization.ranker import HAS_HISTORY, STD_FLOOR, PersonalFusion, PersonalRanker
from training.config import PersonalTrainConfig


@dataclass(frozen=True)
class Group:
    """One logged search: its candidates' features and what the shopper did.

    Attributes:
        key: An id for the search.
        cross: Cross-encoder score per candidate.
        feats: Features per candidate, (n, n_features).
        label: 1 for clicked (or bought), 0 for examined and skipped.
        weight: Example weight (purchases count more).
    """

    key: str
    cross: np.ndarray
    feats: np.ndarray
    label: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class PersonalTrainReport:
    """What training did."""

    train_groups: int
    val_groups: int
    examples: int
    best_epoch: int
    best_val_ips_dcg: float
    baseline_val_ips_dcg: float
    history: list[dict] = field(default_factory=list)


def _dcg(gains_in_order: np.ndarray, k: int) -> float:
    top = gains_in_order[:k]
    return float((top / np.log2(np.arange(2, len(top) + 2))).sum())


def ips_dcg(scores: np.ndarray, label: np.ndarray, weight: np.ndarray, k: int = 10) -> float:
    """DCG@k of the interacted products, each counted ``weight`` times (its inverse
    propensity), over the DCG@k of a perfect ordering counted once.

    Unlike NDCG with weighted gains, the ideal here is not weighted, so the weights do not
    cancel in a list with one click: a click at a rarely examined rank counts for more, as
    the inverse-propensity-scored DCG estimator does (Joachims, Swaminathan and Schnabel,
    "Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    ideal = _dcg(np.sort(np.asarray(label, dtype=np.float64))[::-1], k)
    if ideal <= 0:
        return 0.0
    return _dcg((np.asarray(label) * np.asarray(weight))[order].astype(np.float64), k) / ideal


def click_ndcg(model: PersonalFusion, groups: Sequence[Group]) -> float:
    """Mean inverse-propensity-scored DCG@10 (:func:`ips_dcg`) of the logged interactions,
    over the groups that have one: the validation metric of early stopping."""
    scored = [g for g in groups if (g.label * g.weight).sum() > 0]
    if not scored:
        return 0.0
    with torch.inference_mode():  # one forward pass for every list, then split
        s = model(
            torch.as_tensor(np.concatenate([g.cross for g in scored])),
            torch.as_tensor(np.concatenate([g.feats for g in scored])),
        ).numpy()
    bounds = np.cumsum([0] + [len(g.cross) for g in scored])
    return float(
        np.mean(
            [
                ips_dcg(s[a:b], g.label, g.weight)
                for g, a, b in zip(scored, bounds[:-1], bounds[1:], strict=True)
            ]
        )
    )


def _listwise_loss(model: PersonalFusion, batch: Sequence[Group]) -> tuple[torch.Tensor, int]:
    """Mean over the batch's searches of ``-sum(target * log softmax(scores))`` over the
    number of interacted products (not over ``sum(target)``, which would cancel the
    inverse-propensity weight of a list's only click)."""
    width = max(len(g.cross) for g in batch)
    n_feat = batch[0].feats.shape[1]
    cross = torch.zeros(len(batch), width)
    feats = torch.zeros(len(batch), width, n_feat)
    target = torch.zeros(len(batch), width)
    mask = torch.zeros(len(batch), width, dtype=torch.bool)
    for i, g in enumerate(batch):
        n = len(g.cross)
        cross[i, :n] = torch.as_tensor(g.cross)
        feats[i, :n] = torch.as_tensor(g.feats)
        target[i, :n] = torch.as_tensor(g.label * g.weight)
        mask[i, :n] = True
    logits = model(cross.reshape(-1), feats.reshape(-1, n_feat)).reshape(len(batch), width)
    logp = torch.log_softmax(logits.masked_fill(~mask, -1e9), dim=1)
    count = (target > 0).sum(1)
    keep = count > 0
    if not keep.any():
        return logits.sum() * 0.0, 0
    loss = -(target * logp.masked_fill(~mask, 0.0)).sum(1)[keep] / count[keep]
    return loss.mean(), int(keep.sum())


def train_personal(
    groups: Sequence[Group],
    config: PersonalTrainConfig | None = None,
    log: Callable[[str], None] = print,
    val_groups: Sequence[Group] | None = None,
) -> tuple[PersonalRanker, PersonalTrainReport]:
    """Fits the fusion on logged searches, with early stopping on the validation interactions'
    IPS-DCG@10 (:func:`ips_dcg`).

    Args:
        groups: Logged searches in time order (training, and validation when ``val_groups``
            is None: then the last ``val_fraction`` validates, the latest personalization).
        config: Options.
        log: Progress lines.
        val_groups: Validation searches (e.g. the log's last days), or None.

    Raises:
        ShopsearchError: Fewer than 20 searches to learn from.
    """
    config = config or PersonalTrainConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-unit MLP: more threads only contend
    try:
        return _train_personal(groups, config, log, val_groups)
    finally:
        torch.set_num_threads(threads)


def _train_personal(
    groups: Sequence[Group],
    config: PersonalTrainConfig,
    log: Callable[[str], None],
    val_groups: Sequence[Group] | None,
) -> tuple[PersonalRanker, PersonalTrainReport]:
    if config.loss not in ("bce", "listwise"):
        raise ShopsearchError(f"loss must be 'bce' or 'listwise', got {config.loss!r}")
    if len(groups) < 20:
        raise ShopsearchError(
            f"only {len(groups)} logged searches with an examined result: need at least 20"
        )
    from transformers import set_seed  # the one seeding function (Python, NumPy, torch)

    set_seed(config.seed)
    if val_groups is None:
        n_val = max(1, int(len(groups) * config.val_fraction))
        train, val = list(groups[:-n_val]), list(groups[-n_val:])
    else:
        train, val = list(groups), list(val_groups)
    cross = torch.as_tensor(np.concatenate([g.cross for g in train]), dtype=torch.float32)
    feats = torch.as_tensor(np.concatenate([g.feats for g in train]), dtype=torch.float32)
    label = torch.as_tensor(np.concatenate([g.label for g in train]), dtype=torch.float32)
    weight = torch.as_tensor(np.concatenate([g.weight for g in train]), dtype=torch.float32)
    model = PersonalFusion(feats.shape[1], config.hidden, config.dropout)
    warm = feats[:, HAS_HISTORY] > 0
    ref = feats[warm] if warm.any() else feats
    model.mean.copy_(ref.mean(0))
    model.std.copy_(ref.std(0).clamp_min(STD_FLOOR))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    model.eval()
    baseline = click_ndcg(model, val)  # the tower starts near 0: close to relevance-only
    best, best_epoch, best_state, waited = (
        baseline,
        0,
        {k: v.clone() for k, v in model.state_dict().items()},
        0,
    )
    history = [{"epoch": 0, "val_ips_dcg@10": baseline}]
    gen = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        if config.loss == "listwise":
            order = torch.randperm(len(train), generator=gen).tolist()
            seen = 0
            for start in range(0, len(order), config.groups_per_batch):
                batch = [train[i] for i in order[start : start + config.groups_per_batch]]
                loss, n = _listwise_loss(model, batch)
                if n == 0:
                    continue
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * n
                seen += n
            train_loss = total / max(seen, 1)
        else:
            perm = torch.randperm(len(label), generator=gen)
            for start in range(0, len(perm), config.batch_size):
                idx = perm[start : start + config.batch_size]
                logits = model(cross[idx], feats[idx])
                loss = (loss_fn(logits, label[idx]) * weight[idx]).sum() / weight[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            train_loss = total / len(label)
        model.eval()
        score = click_ndcg(model, val)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_ips_dcg@10": score})
        if score > best + 1e-5:
            best, best_epoch, waited = score, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                log(
                    f"personal: early stop at epoch {epoch} (best {best:.4f} at epoch {best_epoch})"
                )
                break
    model.load_state_dict(best_state)
    log(f"personal: validation IPS-DCG@10 {baseline:.4f} -> {best:.4f} (epoch {best_epoch})")
    report = PersonalTrainReport(
        len(train), len(val), int(len(label)), best_epoch, best, baseline, history
    )
    return PersonalRanker(model, {"train": asdict(report), "config": asdict(config)}), report
