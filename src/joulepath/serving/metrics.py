"""The server's Prometheus metrics (`GET /metrics`), through `prometheus-client`.

Names follow vLLM's where one exists (`vllm:time_to_first_token_seconds` here is
`joulepath:time_to_first_token_seconds`, and so on), so dashboards built for vLLM need only the prefix
changed; joulepath's own add the energy each request was charged (a counter of joules and a histogram of
joules per output token, both labelled with the meter's provenance: measured or estimated), the guard's
refusals, answer-cache hits and speculative decoding's drafts. One registry per server: tests can start
several in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from joulepath.results import RequestRecord

P = "joulepath:"
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                     20.0, 40.0, 80.0)  # fmt: skip
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
J_PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def provenance_label(provenance: str) -> str:
    """measured | estimated | none: the meter's summary ("estimated:cpu-tdp", "rapl", ...) reduced to the
    two words a dashboard filters on."""
    if provenance.startswith("none"):
        return "none"
    return "estimated" if "estimated" in provenance else "measured"


class ServerMetrics:
    """Everything `/metrics` shows. The engine thread and the HTTP handlers both update it (the client
    library is thread-safe)."""

    def __init__(self, model: str) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["model_name"]
        self.model = model
        self.ttft = Histogram(f"{P}time_to_first_token_seconds", "Time to first token, s (measured in the engine).",
                              labels, buckets=LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.tpot = Histogram(f"{P}time_per_output_token_seconds", "Time per output token after the first, s.",
                              labels, buckets=TPOT_BUCKETS_S, registry=r)  # fmt: skip
        self.e2e = Histogram(f"{P}e2e_request_latency_seconds", "End-to-end request latency in the engine, s.",
                             labels, buckets=LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.running = Gauge(f"{P}num_requests_running", "Requests in the engine's running batch.", labels, registry=r)
        self.waiting = Gauge(f"{P}num_requests_waiting", "Requests waiting for admission.", labels, registry=r)
        self.kv_usage = Gauge(f"{P}kv_cache_usage_perc", "Share of KV-cache blocks in use (0-1).", labels, registry=r)
        self.prompt_tokens = Counter(f"{P}prompt_tokens", "Prompt tokens of finished requests.", labels, registry=r)
        self.generation_tokens = Counter(f"{P}generation_tokens", "Generated tokens.", labels, registry=r)
        self.success = Counter(f"{P}request_success", "Finished requests by finish reason.",
                               [*labels, "finished_reason"], registry=r)  # fmt: skip
        self.rejected = Counter(f"{P}requests_rejected", "Requests refused before the engine (HTTP status).",
                                [*labels, "status"], registry=r)  # fmt: skip
        self.aborted = Counter(f"{P}requests_aborted", "Requests whose client went away.", labels, registry=r)
        self.energy = Counter(f"{P}energy_joules", "Engine energy charged to finished requests, J.",
                              [*labels, "provenance"], registry=r)  # fmt: skip
        self.j_per_token = Histogram(f"{P}joules_per_output_token", "Energy per output token of a request, J.",
                                     [*labels, "provenance"], buckets=J_PER_TOKEN_BUCKETS, registry=r)  # fmt: skip
        self.guard_blocked = Counter(f"{P}guard_blocked", "Requests the guardrails refused or cut.",
                                     [*labels, "stage"], registry=r)  # fmt: skip
        self.cache_hits = Counter(f"{P}answer_cache_hits", "Requests answered by the answer cache.", labels, registry=r)
        self.prefix_hit_tokens = Counter(f"{P}prefix_cache_hits", "Prompt tokens served from cached KV.", labels,
                                         registry=r)  # fmt: skip
        self.prefix_query_tokens = Counter(f"{P}prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                                           labels, registry=r)  # fmt: skip
        self.draft_tokens = Counter(f"{P}spec_decode_num_draft_tokens", "Draft tokens proposed.", labels, registry=r)
        self.accepted_tokens = Counter(f"{P}spec_decode_num_accepted_tokens", "Draft tokens accepted.", labels,
                                       registry=r)  # fmt: skip

    def finished(self, record: RequestRecord | None, finish_reason: str, input_blocked: bool, output_blocked: bool,
                 cache_hit: bool, energy_j: float = 0.0) -> None:  # fmt: skip
        """One finished request (record None: the input guard refused it before the engine). `energy_j`: what
        it cost in all (a cascade's discarded small-tier answer included); default the record's."""
        m = self.model
        self.success.labels(m, finish_reason).inc()
        if input_blocked:
            self.guard_blocked.labels(m, "input").inc()
        if output_blocked:
            self.guard_blocked.labels(m, "output").inc()
        if cache_hit:
            self.cache_hits.labels(m).inc()
        if record is None:
            return
        self.prompt_tokens.labels(m).inc(record.prompt_tokens)
        self.generation_tokens.labels(m).inc(record.output_tokens)
        self.prefix_query_tokens.labels(m).inc(record.prompt_tokens)
        self.prefix_hit_tokens.labels(m).inc(record.cached_prompt_tokens)
        self.draft_tokens.labels(m).inc(record.draft_proposed)
        self.accepted_tokens.labels(m).inc(record.draft_accepted)
        if cache_hit:
            return  # no engine work: its latencies are a lookup's
        self.ttft.labels(m).observe(record.ttft_s)
        self.e2e.labels(m).observe(record.e2e_s)
        if record.output_tokens > 1:
            self.tpot.labels(m).observe(record.tpot_s)
        provenance = provenance_label(record.energy_provenance)
        energy_j = max(energy_j or record.energy_j, 0.0)
        self.energy.labels(m, provenance).inc(energy_j)
        if record.output_tokens:
            self.j_per_token.labels(m, provenance).observe(energy_j / record.output_tokens)

    def engine_state(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.labels(self.model).set(running)
        self.waiting.labels(self.model).set(waiting)
        self.kv_usage.labels(self.model).set(kv_usage)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
