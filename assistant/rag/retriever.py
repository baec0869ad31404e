"""Hybrid retrieval: keyword (FTS5 BM25) and dense (FAISS) candidates, fused by score.

Chosen by measurement on COVID-QA (1,380 expert questions over 98 papers, all-MiniLM-L6-v2).
First in a standalone script with the data README's 200-word chunks (2,106 chunks), recall@5:
keyword 0.735, keyword without stop words 0.747, dense 0.499, reciprocal rank fusion 0.674 (plain
RRF loses to keyword search here, as the README warns); a convex combination of min-max normalised
scores with the *exact* cosine of every keyword candidate: 0.763 (recall@10 0.844, MRR 0.627) at
weight 0.5. Boosting chunks of the best-scoring document did not help and is not done.
Then through the app itself (bench/rag.py: its own 256-token chunks, 3,280 chunks, 1,370
answerable questions): recall@5 keyword 0.749, dense 0.525, RRF 0.683, hybrid 0.760; MRR@10
0.624 / 0.379 / 0.533 / 0.633. Hybrid beats both, by a thin margin over keyword search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

KEYWORD_WEIGHT = 0.5  # the rest goes to the dense score
POOL = 100  # candidates taken from each search before fusion
MMR_POOL = 20  # the best this many are re-ordered for diversity
DUPLICATE_COSINE = 0.97  # with diversity on, a passage this close to one already picked goes last
MODES = ("hybrid", "dense", "keyword")

# Words that carry no topic: BM25 weighs them low but not zero, and on questions ("what is the
# ...") they still pull in off-topic chunks. Removing them: keyword recall@5 0.735 -> 0.747.
STOP_WORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been being what which who whom whose "
    "when where why how does do did can could should would will may might this that these those it its as than "
    "then there their they them his her he she we you your our not no yes into about between during after before "
    "over under also such".split()
)


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    file: str
    page: int | None
    heading: str | None
    text: str
    score: float
    dense_rank: int | None  # 1-based rank in the dense list, None if it was not there
    keyword_rank: int | None
    similarity: float | None  # cosine with the question (None in keyword mode)
    why: list[str] = field(default_factory=list)  # for the retrieval inspector


def keyword_query(question: str) -> str:
    """The question's topic words, for FTS5 (the store quotes each one)."""
    words = re.findall(r"\w+", question.lower())
    kept = [w for w in words if w not in STOP_WORDS]
    return " ".join(kept or words)


def search(store, embedder, query: str, collection: str | Sequence[str], k: int = 5, mode: str = "hybrid",
           keyword_weight: float = KEYWORD_WEIGHT, pool: int = POOL, diversity: float = 0.0) -> list[Hit]:
    """The k best chunks for query in a collection (or several together); mode is hybrid, dense or keyword.

    diversity > 0 picks the k by maximal marginal relevance among the best MMR_POOL: each next chunk is
    the one with the best (1 - diversity) * score - diversity * (its highest cosine with those already
    picked), so passages saying the same thing give way, and copies (cosine >= DUPLICATE_COSINE) go last.
    On COVID-QA (hybrid, 1,370 questions) recall@5 is 0.760 at 0, 0.764 at 0.3, 0.750 at 0.5.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not query.strip():
        return []
    keyword = store.keyword_search(keyword_query(query), collection, pool) if mode != "dense" else []
    vector = embedder.embed([query])[0] if mode != "keyword" else None
    dense = store.dense_search(vector, collection, pool) if vector is not None else []
    keyword_rank = {cid: r for r, (cid, _) in enumerate(keyword, 1)}
    dense_rank = {cid: r for r, (cid, _) in enumerate(dense, 1)}

    if mode == "keyword":
        scored = [(cid, -score) for cid, score in keyword]  # FTS5's bm25() is lower-is-better
    elif mode == "dense":
        scored = list(dense)
    else:
        scored = _fuse(store, vector, keyword, dense, collection, keyword_weight)
    top = sorted(scored, key=lambda item: -item[1])
    top = _mmr(store, top[:max(MMR_POOL, k)], collection, k, diversity) if diversity > 0 and vector is not None \
        else top[:k]
    ids = [cid for cid, _ in top]
    records = {r.chunk_id: r for r in store.chunks(ids)}
    similarity = dict(zip(ids, (store.vectors(ids, collection) @ vector).tolist(), strict=True)) \
        if vector is not None and ids else {}
    hits = []
    for cid, score in top:
        record = records.get(cid)
        if record is None:
            continue  # removed between the search and now (re-indexing in the background)
        why = []
        if cid in keyword_rank:
            why.append(f"keyword rank {keyword_rank[cid]}")
        if cid in dense_rank:
            why.append(f"meaning rank {dense_rank[cid]}")
        hits.append(Hit(cid, record.file, record.page, record.heading, record.text, float(score),
                        dense_rank.get(cid), keyword_rank.get(cid), similarity.get(cid), why))
    return hits


def _fuse(store, vector, keyword, dense, collection: str | Sequence[str], keyword_weight: float) -> list[tuple[int, float]]:
    candidates = sorted({cid for cid, _ in keyword} | {cid for cid, _ in dense})
    if not candidates:
        return []
    bm25 = {cid: -score for cid, score in keyword}
    floor = min(bm25.values()) if bm25 else 0.0
    k_scores = np.array([bm25.get(cid, floor) for cid in candidates], dtype=np.float32)
    # Exact cosines for every candidate: a keyword hit outside FAISS's top list still gets its
    # real meaning score instead of a made-up floor (0.742 -> 0.753 recall@5 in the measurement).
    d_scores = store.vectors(candidates, collection) @ vector
    fused = keyword_weight * _minmax(k_scores) + (1 - keyword_weight) * _minmax(d_scores)
    return list(zip(candidates, fused.tolist(), strict=True))


def _mmr(store, ranked: list[tuple[int, float]], collection, k: int, diversity: float) -> list[tuple[int, float]]:
    if len(ranked) <= 1:
        return ranked[:k]
    vectors = store.vectors([cid for cid, _ in ranked], collection)
    scores = _minmax(np.array([s for _, s in ranked], dtype=np.float32))
    picked: list[int] = []
    closest = np.full(len(ranked), -np.inf, dtype=np.float32)  # highest cosine with any picked chunk
    while len(picked) < min(k, len(ranked)):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = (1 - diversity) * scores - diversity * penalty
        # A copy of a passage already picked (the same file in two folders) tells the model nothing new.
        value[closest >= DUPLICATE_COSINE] -= 2.0
        value[picked] = -np.inf
        best = int(np.argmax(value))
        picked.append(best)
        closest = np.maximum(closest, vectors @ vectors[best])
    return [ranked[i] for i in picked]


def expand(store, hits: list[Hit], neighbours: int) -> list[str]:
    """Each hit's text with up to `neighbours` chunks either side of it from its file (sentence-window
    expansion), overlaps removed; the model reads a passage in its context, the score stays the chunk's."""
    if neighbours <= 0:
        return [h.text for h in hits]
    out = []
    for hit in hits:
        window = [r for r in store.neighbours(hit.chunk_id, neighbours) if r.page == hit.page]
        out.append(join_chunks(window) if window else hit.text)
    return out


def join_chunks(records) -> str:
    """Consecutive chunks of one file as one text: a chunk is file text [start:end], so overlaps are cut by offset."""
    parts, end = [], None
    for r in records:
        if end is not None and r.start < end <= r.end:
            parts.append(r.text[end - r.start:])
        elif end is not None and r.end <= end:
            continue  # wholly inside the text already taken
        else:
            parts.append(("\n\n" if parts else "") + r.text)
        end = r.end if end is None else max(end, r.end)
    return "".join(parts)


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)
