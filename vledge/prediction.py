"""What ``EdgeModel.classify`` returns for one image."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """The zero-shot classification of one image.

    ``label`` and ``score`` are the best label and its probability; ``top`` lists the ``top_k`` best
    ``(label, probability)`` pairs, best first (``top[0] == (label, score)``). Probabilities are a softmax
    over every label given, so they sum to 1 over all labels, not over ``top``.
    """

    label: str
    score: float
    top: list[tuple[str, float]]

    @classmethod
    def from_ranked(cls, ranked: list[tuple[str, float]]) -> "Prediction":
        """A prediction from ``(label, probability)`` pairs, best first (at least one)."""
        label, score = ranked[0]
        return cls(label, score, ranked)

    def to_dict(self) -> dict:
        """Plain JSON-ready values: ``{"label", "score", "top": [{"label", "score"}, ...]}``."""
        return {"label": self.label, "score": self.score,
                "top": [{"label": name, "score": score} for name, score in self.top]}
