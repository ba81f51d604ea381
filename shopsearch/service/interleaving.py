"""The service's interleaving experiment: a challenger ranker B, and which searches see it.

With ``interleave_share`` above 0 the service opens a second pipeline, **B**, beside its own
(**A**): the same retriever (the index is opened once), the same merchandising rules, and B's
own stages where the settings name them (``interleave_reranker``, ``interleave_personal``,
``interleave_ranker``; a folder, or ``none`` for B without that stage; unset: A's). B must differ
from A in at least one stage: an experiment of a ranker against itself is refused. A search is
served as a team-draft interleaving of A's and B's rankings (:mod:`rerank.interleave`) when

* the shopper is in the experiment: ``hash(pseudonym, experiment) < share``, so a shopper stays
  in (or out) for the whole experiment; an anonymous search only with
  ``interleave_anonymous``, drawn by its session (``session_id``) or, without one, its query;
* the request did not opt out (``experiments=false``: the shop passes it for a shopper who
  declined experiments);
* it is ranked by relevance (a ``sort`` by a field is the shopper's order, not a ranker's).

The merged list is ``offset + k`` long and the page is its slice, so page 2 continues page 1:
the coin is seeded from the pseudonym, the query and the UTC day
(:func:`rerank.interleave.interleave_seed`). A page after the first searches A again at that
depth. Pinned products keep their places and belong to neither team. The response looks like
any other (no team is shown); the search log records the experiment and each product's team.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError
from rerank.interleave import in_experiment, interleave_seed, team_draft

if TYPE_CHECKING:
    from personalization.privacy import Pseudonymizer
    from personalization.profiles import ProfileStore
    from rerank.pipeline import SearchPipeline
    from retrieval.filters import Filters
    from retrieval.hits import Hits
    from shopsearch.service.models import SearchParams
    from shopsearch.service.settings import ServiceSettings

#: The word that means "B without this stage" in ``interleave_reranker``, ``interleave_personal``
#: and ``interleave_ranker``.
NONE = "none"
DAY_S = 86_400


@dataclass(frozen=True)
class Challenger:
    """The experiment's settings and its B pipeline (sharing A's retriever: never closed).

    Attributes:
        name: The experiment's name.
        share: Share of shoppers in it, 0..1.
        anonymous: Whether anonymous searches take part.
        pipeline: Ranker B.
        models: B's stages as the log records them (folder or None per stage).
    """

    name: str
    share: float
    anonymous: bool
    pipeline: SearchPipeline
    models: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    """What a search serves: its page, and the experiment and teams when interleaved."""

    hits: Hits
    experiment: str | None = None
    teams: list[str | None] | None = None


def open_challenger(
    pipeline: SearchPipeline,
    settings: ServiceSettings,
    store: ProfileStore | None,
    pseudonymizer: Pseudonymizer,
) -> Challenger | None:
    """Ranker B beside ``pipeline`` (A), as the settings describe it; None without a share.

    Args:
        pipeline: A, already open: B shares its retriever and rules.
        settings: The service's settings (``interleave_*``).
        store: The profile store A's generation uses (B's personal model reads it too).
        pseudonymizer: Its pseudonymizer.

    Raises:
        ShopsearchError: A folder that is not a model, a personal model without a profile
            store, one trained on other relevance scores than B serves, a learned ranker
            trained on another cross-encoder than B's, or a B with every stage A's.
    """
    if settings.interleave_share <= 0.0:
        return None
    from personalization.personalizer import Personalizer
    from personalization.ranker import PersonalRanker
    from rerank.cross_encoder import Reranker
    from rerank.ltr import LearnedRanker
    from rerank.pipeline import SearchPipeline

    reranker: Any = pipeline.reranker
    wanted = settings.interleave_reranker
    if wanted is not None:
        reranker = (
            None
            if wanted.lower() == NONE
            else Reranker.load(
                wanted,
                device=settings.device,
                backend=settings.backend,
                quantize=settings.quantize,
                threads=settings.threads,
            )
        )
    personal: Any = pipeline.personal
    wanted_personal = settings.interleave_personal
    if wanted_personal is not None:
        if wanted_personal.lower() == NONE:
            personal = None
        else:
            if store is None:
                raise ShopsearchError(
                    "--interleave-personal needs a profile directory (--profiles)"
                )
            personal = Personalizer(PersonalRanker.load(wanted_personal), store, pseudonymizer)
    ranker: Any = pipeline.ranker
    wanted = settings.interleave_ranker
    if wanted is not None:
        ranker = None if wanted.lower() == NONE else LearnedRanker.open(wanted)
    models = {
        "reranker": getattr(reranker, "fingerprint", None)
        or (settings.reranker if reranker is pipeline.reranker else None),
        "personal": settings.interleave_personal
        if personal is not pipeline.personal
        else settings.personal,
        "ranker": getattr(ranker, "fingerprint", None),
    }
    b_personal = settings.personal if personal is pipeline.personal else wanted_personal
    if _stages(reranker, b_personal if personal is not None else None, ranker) == _stages(
        pipeline.reranker,
        settings.personal if pipeline.personal is not None else None,
        pipeline.ranker,
    ):
        raise ShopsearchError(
            "the interleaving challenger (B) is ranker A itself (the same cross-encoder, "
            "personalization and learned stage): give B another model, or 'none', with "
            "--interleave-reranker, --interleave-personal or --interleave-ranker"
        )
    try:
        b = SearchPipeline(pipeline.retriever, reranker, personal, pipeline.rules, ranker)
    except ShopsearchError as exc:
        raise ShopsearchError(f"the interleaving challenger (B): {exc}") from None
    assert settings.interleave_name is not None  # the settings refuse a share without a name
    return Challenger(
        settings.interleave_name,
        settings.interleave_share,
        settings.interleave_anonymous,
        b,
        models,
    )


def _stages(reranker: Any, personal_folder: Any, ranker: Any) -> tuple[Any, ...]:
    """What a pipeline's ranking is made of: each stage's model (the personal model's folder),
    or None without it."""
    return (
        getattr(reranker, "fingerprint", None) or (id(reranker) if reranker else None),
        personal_folder or None,
        getattr(ranker, "fingerprint", None) or (id(ranker) if ranker else None),
    )


def chosen(
    challenger: Challenger | None,
    params: SearchParams,
    pseudonym: str | None,
    session: str = "",
) -> bool:
    """Whether this search is served interleaved (see the module's docstring).

    Args:
        challenger: The experiment, or None.
        params: The request.
        pseudonym: The shopper's pseudonym; None: anonymous.
        session: The session's pseudonym ("" none): an anonymous search's unit when given.
    """
    if challenger is None or not params.experiments:
        return False
    if params.sort is not None and params.sort.strip().lower() not in ("", "relevance"):
        return False
    if pseudonym is None:
        if not challenger.anonymous:
            return False
        unit = f"session:{session}" if session else "query:" + " ".join(params.q.lower().split())
    else:
        unit = pseudonym
    return in_experiment(unit, challenger.name, challenger.share)


def interleave(
    loaded: Any,
    params: SearchParams,
    hits: Hits,
    filters: Filters,
    now: float | None = None,
) -> Served:
    """The page to serve: ``hits`` (A's page) as it is, or A and B interleaved.

    Call it with the generation pinned (``loaded``), outside its ``search_lock``: it takes the
    lock for B's search (and A's again, for a page after the first).

    Args:
        loaded: The pinned :class:`shopsearch.service.runtime.Loaded` (its ``interleave``).
        params: The request.
        hits: A's page, from ``loaded.pipeline.search`` with the request's fields.
        filters: The request's filters, as searched.
        now: Epoch seconds (the day the coin is seeded with); None: now.

    Returns:
        ``Served(hits)`` when the search is not in the experiment; else the merged page with
        A's facets, counts, rules and correction, the experiment's name and one team per
        shown product ("A", "B"; None for a pinned product).
    """
    challenger: Challenger | None = getattr(loaded, "interleave", None)
    pseudonym = (
        loaded.pseudonymizer.pseudonym(params.user_id) if params.user_id is not None else None
    )
    session_id = getattr(params, "session_id", None)
    session = loaded.pseudonymizer.session_pseudonym(session_id) if session_id else ""
    if not chosen(challenger, params, pseudonym, session):
        return Served(hits)
    assert challenger is not None
    from rerank.defaults import DEFAULT_RERANK_DEPTH

    t0 = time.perf_counter()
    depth = params.offset + params.k
    options = dict(
        user_id=params.user_id,
        k=depth,
        offset=0,
        rerank_depth=max(loaded.settings.rerank_depth or DEFAULT_RERANK_DEPTH, depth),
        filters=filters,
        mode=params.mode,
        explain=params.explain,
        correct=params.correct,
        diversify=params.diversify,
    )
    with loaded.search_lock:
        full_a = hits if params.offset == 0 else loaded.pipeline.search(params.q, **options)
        full_b = challenger.pipeline.search(params.q, **options)
    # pinned products keep their absolute places, credited to neither team
    pinned = {i: h for i, h in enumerate(full_a) if any(a == "pin" for _, a in h.rule)}
    pinned_ids = {h.product_id for h in pinned.values()}
    by_id = {h.product_id: h for h in full_b}
    by_id.update({h.product_id: h for h in full_a})
    day = int((time.time() if now is None else now) // DAY_S)
    merged = team_draft(
        [h.product_id for h in full_a if h.product_id not in pinned_ids],
        [h.product_id for h in full_b if h.product_id not in pinned_ids],
        depth - len(pinned),
        random.Random(interleave_seed(pseudonym or session, params.q, day, challenger.name)),
    )
    order: list[Any] = [by_id[i] for i in merged.ids]
    teams: list[str | None] = list(merged.teams)
    for i in sorted(pinned):
        order.insert(i, pinned[i])
        teams.insert(i, None)
    cut = slice(params.offset, params.offset + params.k)
    page = hits.like(order[cut])
    page.facets = hits.facets
    page.total_candidates = hits.total_candidates
    page.rules = hits.rules
    page.redirected = hits.redirected
    page.stage_ms = {**hits.stage_ms, "interleave": (time.perf_counter() - t0) * 1000}
    return Served(page, challenger.name, teams[cut])
