"""Cosine similarity, one pair or many at once: shared by retrieval (scoring stored vectors) and
the agent (grading, citations, reflection)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def cosine_matrix(
    rows: Sequence[Sequence[float]], columns: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Cosine of every row vector with every column vector, in one matrix product (sentences
    against chunks, a query against candidates: a Python loop per pair cost milliseconds)."""
    if not rows or not columns:
        return [[] for _ in rows]
    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(columns, dtype=np.float64)
    norms = np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    sims = np.divide(a @ b.T, norms, out=np.zeros_like(norms), where=norms > 0)
    out: list[list[float]] = sims.tolist()
    return out


def mean_vector(vectors: Sequence[Sequence[float]]) -> list[float]:
    """The direction of several unit vectors together: an answer's from its sentences', which
    are embedded anyway, instead of encoding the whole answer once more."""
    total = np.asarray(vectors, dtype=np.float64).sum(axis=0)
    norm = float(np.linalg.norm(total))
    out: list[float] = (total / norm if norm > 0 else total).tolist()
    return out
