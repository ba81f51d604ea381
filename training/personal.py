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
from personalization.ranker import (
    HAS_HISTORY,
    STD_FLOOR,
    GBDTFusion,
    PersonalFusion,
    PersonalRanker,
)
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
        grade: What the shopper did, 0 (nothing) to 3 (purchase), when the weight also
            carries an inverse propensity (``weight / max(grade, 1)`` is that propensity's
            inverse); None: the GBDT reads ``label * weight`` as the graded target.
        position: 1-based shown position per candidate, for a ranker that handles position
            bias itself (the GBDT's ``bias="position"``); None: not used.
    """

    key: str
    cross: np.ndarray
    feats: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    grade: np.ndarray | None = None
    position: np.ndarray | None = None


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


def click_ndcg(model: PersonalFusion | GBDTFusion, groups: Sequence[Group]) -> float:
    """Mean inverse-propensity-scored DCG@10 (:func:`ips_dcg`) of the logged interactions,
    over the groups that have one: the validation metric of early stopping."""
    scored = [g for g in groups if (g.label * g.weight).sum() > 0]
    if not scored:
        return 0.0
    cross = np.concatenate([g.cross for g in scored])
    feats = np.concatenate([g.feats for g in scored])
    if isinstance(model, GBDTFusion):
        rel, personal = model.parts(cross, feats)
        return _mean_ips(rel + personal, scored)
    with torch.inference_mode():  # one forward pass for every list, then split
        s = model(torch.as_tensor(cross), torch.as_tensor(feats)).numpy()
    return _mean_ips(s, scored)


def _mean_ips(s: np.ndarray, scored: Sequence[Group]) -> float:
    """:func:`ips_dcg` of each group's slice of the concatenated scores ``s``, averaged."""
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
    config: PersonalTrainConfig | GBDTTrainConfig | None = None,
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
    if isinstance(config, GBDTTrainConfig):
        return _train_gbdt(groups, config, log, val_groups)
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


@dataclass(frozen=True)
class GBDTTrainConfig:
    """Options of the GBDT personal part (:func:`train_personal` given these trains a
    :class:`personalization.ranker.GBDTFusion` instead of the MLP).

    Attributes:
        bias: Position-bias handling: "ipw" (each interacted row weighted by its inverse
            propensity, the MLP's weights) or "position" (LightGBM's own unbiased lambdarank,
            each row's shown position given to the ``Dataset``; the weights then carry the
            grade only).
        trees: Most trees; the count kept is chosen on validation.
        num_leaves, tree_lr, min_data_in_leaf: LightGBM's ``num_leaves``, ``learning_rate``,
            ``min_data_in_leaf``.
        patience: Validation checks (every :data:`CHECK_EVERY` trees) without improvement
            before stopping.
        val_fraction: Without validation groups, the last this share of the groups validates.
        seed: LightGBM's seed.
    """

    bias: str = "ipw"
    trees: int = 300
    num_leaves: int = 15
    tree_lr: float = 0.05
    min_data_in_leaf: int = 50
    patience: int = 5
    val_fraction: float = 0.15
    seed: int = 0


#: LightGBM's lambdarank reads integer labels up to this; a graded target (true utilities)
#: is scaled onto 0..MAX_LABEL with linear gains.
MAX_LABEL = 30
#: Trees are checked on validation every this many (the best count is kept).
CHECK_EVERY = 10


def _gbdt_rows(
    groups: Sequence[Group], config: GBDTTrainConfig, scale: float | None
) -> tuple[dict, float]:
    """The warm groups with an interaction as LightGBM rows: features, integer labels, the
    relevance score as starting margin, weights, list sizes and (``bias="position"``)
    0-based shown positions; and the label scale used."""
    keep = [g for g in groups if g.feats[:, HAS_HISTORY].any() and (g.label * g.weight).sum() > 0]
    if not keep:
        return {}, scale or 1.0
    graded = all(g.grade is not None for g in keep)
    if graded:
        label = np.concatenate([g.grade for g in keep]).astype(np.float64)
        weight = np.concatenate(
            [np.where(g.grade > 0, g.weight / np.maximum(g.grade, 1.0), 1.0) for g in keep]
        )
        scale = 1.0
    else:  # a graded target (label * weight): scaled onto 0..MAX_LABEL
        target = np.concatenate([g.label * g.weight for g in keep]).astype(np.float64)
        if scale is None:
            top = float(target.max())
            scale = MAX_LABEL / top if top > 0 else 1.0
        label = np.clip(np.rint(target * scale), 0, MAX_LABEL)
        weight = np.ones(len(label))
    rows = {
        "data": np.concatenate([g.feats for g in keep]).astype(np.float32),
        "label": label,
        "init_score": np.concatenate([g.cross for g in keep]).astype(np.float64),
        "weight": weight,
        "group": [len(g.cross) for g in keep],
    }
    if config.bias == "position" and all(g.position is not None for g in keep):
        rows["position"] = np.concatenate([g.position for g in keep]).astype(np.int32) - 1
    return rows, scale


def _train_gbdt(
    groups: Sequence[Group],
    config: GBDTTrainConfig,
    log: Callable[[str], None],
    val_groups: Sequence[Group] | None,
) -> tuple[PersonalRanker, PersonalTrainReport]:
    """The GBDT personal part: LightGBM lambdarank (``objective="lambdarank"``) over the warm
    searches with an interaction, each row's relevance score its starting margin; the tree
    count is chosen on the validation interactions' IPS-DCG@10, checked every
    :data:`CHECK_EVERY` trees (0 trees, the relevance-only ranking, is the baseline).

    Position bias: ``config.bias="ipw"`` weights each interacted row by its inverse
    propensity (the weights of the MLP's loss; Joachims et al., WSDM 2017);
    ``"position"`` gives LightGBM each row's shown position, and it estimates the position
    biases jointly with the trees (the unbiased LambdaMART of Hu et al., WWW 2019).
    """
    import lightgbm as lgb

    if config.bias not in ("ipw", "position"):
        raise ShopsearchError(f"bias must be 'ipw' or 'position', got {config.bias!r}")
    if len(groups) < 20:
        raise ShopsearchError(
            f"only {len(groups)} logged searches with an examined result: need at least 20"
        )
    if val_groups is None:
        n_val = max(1, int(len(groups) * config.val_fraction))
        train, val = list(groups[:-n_val]), list(groups[-n_val:])
    else:
        train, val = list(groups), list(val_groups)
    rows, _ = _gbdt_rows(train, config, None)
    warm = [g.feats for g in train if g.feats[:, HAS_HISTORY].any()]
    mean = (
        np.concatenate(warm).mean(0)
        if warm
        else np.zeros(train[0].feats.shape[1], dtype=np.float32)
    )
    empty = GBDTFusion(None, mean)
    baseline = click_ndcg(empty, val)
    history = [{"epoch": 0, "val_ips_dcg@10": baseline}]
    best, best_trees, booster = baseline, 0, None
    if rows:
        dataset = lgb.Dataset(
            rows["data"],
            label=rows["label"],
            weight=rows["weight"],
            group=rows["group"],
            init_score=rows["init_score"],
            position=rows.get("position"),
            free_raw_data=False,
        )
        params = {
            "objective": "lambdarank",
            "label_gain": list(range(MAX_LABEL + 1)),
            "learning_rate": config.tree_lr,
            "num_leaves": config.num_leaves,
            "min_data_in_leaf": config.min_data_in_leaf,
            "seed": config.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,
            "verbose": -1,
        }
        booster = lgb.train(params, dataset, num_boost_round=config.trees)
        waited = 0
        for trees in range(CHECK_EVERY, booster.current_iteration() + 1, CHECK_EVERY):
            score = click_ndcg(GBDTFusion(_Truncated(booster, trees), mean), val)
            history.append({"epoch": trees, "val_ips_dcg@10": score})
            if score > best + 1e-5:
                best, best_trees, waited = score, trees, 0
            else:
                waited += 1
                if waited >= config.patience:
                    break
    kept = None
    if booster is not None and best_trees > 0:
        kept = lgb.Booster(model_str=booster.model_to_string(num_iteration=best_trees))
    log(
        f"personal: validation IPS-DCG@10 {baseline:.4f} -> {best:.4f} ({best_trees} trees, "
        f"lambdarank, bias {config.bias})"
    )
    report = PersonalTrainReport(
        len(train), len(val), int(len(rows.get("label", ()))), best_trees, best, baseline, history
    )
    model = GBDTFusion(kept, mean)
    return PersonalRanker(model, {"train": asdict(report), "config": asdict(config)}), report


class _Truncated:
    """A booster read with its first ``trees`` trees only (``predict`` as ``lightgbm.Booster``)."""

    def __init__(self, booster, trees: int) -> None:
        self.booster, self.trees = booster, trees

    def predict(self, data: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return self.booster.predict(data, num_iteration=self.trees, num_threads=num_threads)
