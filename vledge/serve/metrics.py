"""Prometheus metrics of the service, in a registry of its own (two apps in one process never mix)."""

from __future__ import annotations

from vledge.version import __version__

ENDPOINTS = ("/", "/healthz", "/metrics", "/v1/classify", "/v1/embed/image", "/v1/embed/text")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests, errors, latency histograms, model state and placement."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vledge_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("vledge_request_errors", "Requests answered with an error, by reason",
                              ["endpoint", "status", "reason"], registry=r)
        self.latency = Histogram("vledge_request_seconds", "Time from request to response", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("vledge_inference_seconds", "Model time of a request (decoding included)",
                                   ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("vledge_requests_in_flight", "Requests being answered now", registry=r)
        self.model_loaded = Gauge("vledge_model_loaded", "1 while the model is loaded", registry=r)
        self.tower_loaded = Gauge("vledge_tower_loaded", "1 while a tower is loaded", ["tower"], registry=r)
        self.placement = Gauge("vledge_tower_placement", "Where each tower runs (1: now; 0: when it was last loaded)",
                               ["tower", "backend", "device"], registry=r)
        self.loads = Counter("vledge_model_loads", "Times the model was loaded", registry=r)
        self.unloads = Counter("vledge_model_unloads", "Times the idle model was unloaded", registry=r)
        self.load_seconds = Gauge("vledge_model_load_seconds", "Seconds the last load took", registry=r)
        Info("vledge_build", "vledge version", registry=r).info({"version": __version__})

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def set_loaded(self, towers: dict[str, tuple[str, str]] | None) -> None:
        """``towers``: tower -> (backend, device) of the model just loaded; None: unloaded."""
        self.model_loaded.set(1 if towers else 0)
        for (tower, backend, device), _ in list(self._placements()):
            self.placement.labels(tower, backend, device).set(0)
        for tower in ("image", "text"):
            self.tower_loaded.labels(tower).set(1 if towers and tower in towers else 0)
        for tower, (backend, device) in (towers or {}).items():
            self.placement.labels(tower, backend, device).set(1)

    def _placements(self):
        for metric in self.placement.collect():
            for sample in metric.samples:
                yield (sample.labels["tower"], sample.labels["backend"], sample.labels["device"]), sample.value

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
