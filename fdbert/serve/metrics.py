"""The server's Prometheus metrics (``GET /metrics``), in a registry of their own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# seconds: from 0.5 ms (an idle queue) to 30 s (a deadline)
_TIME = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.queue_depth = Gauge("fdbert_queue_requests", "Requests waiting in the queue", ["model"], registry=r)
        self.queue_tokens = Gauge("fdbert_queue_tokens", "Tokens waiting in the queue", ["model"], registry=r)
        self.batch_size = Histogram("fdbert_batch_size", "Sequences per packed forward pass", ["model"],
                                    buckets=_SIZE, registry=r)
        self.batch_tokens = Histogram("fdbert_batch_tokens", "Tokens per packed forward pass (or decode "
                                      "step)", ["model"], buckets=_TOKENS, registry=r)
        self.queue_seconds = Histogram("fdbert_queue_seconds", "Time from admission to the start of "
                                       "compute, per sequence", ["model"], buckets=_TIME, registry=r)
        self.compute_seconds = Histogram("fdbert_compute_seconds", "Time of one packed forward pass "
                                         "(or decode step)", ["model"], buckets=_TIME, registry=r)
        self.requests = Counter("fdbert_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("fdbert_request_seconds", "Time from the handler's start (the "
                                         "request's head parsed) to its answer, by endpoint and status",
                                         ["endpoint", "status"], buckets=_TIME, registry=r)
        self.generated_tokens = Counter("fdbert_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.live_generations = Gauge("fdbert_live_generations", "Generations in the running batch",
                                      ["model"], registry=r)
        self.in_flight = Gauge("fdbert_requests_in_flight", "HTTP requests being handled", registry=r)

    def add_model(self, name: str):
        """Create a served model's series at zero, so they are listed before its first request."""
        for m in (self.queue_depth, self.queue_tokens, self.batch_size, self.batch_tokens, self.queue_seconds,
                  self.compute_seconds, self.generated_tokens, self.live_generations):
            m.labels(name)
