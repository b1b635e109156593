"""Prometheus metrics. Every label value comes from a closed set (statuses, outcomes,
configured source names); no phone number, channel name or secret is ever a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from icm import __version__
from icm.model import Status

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 5)

# What the dialplan reports back in ICMResult; anything else is counted as OTHER.
OUTCOMES = frozenset(
    {*(s.value for s in Status if s is not Status.DIAL), "ANSWERED", "NOANSWER", "ABANDONED"}
)


class Metrics:
    """All of one daemon's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.info = Gauge("icm_info", "ICM version", ["version"], registry=registry)
        self.info.labels(__version__).set(1)
        self.ami_connected = Gauge(
            "icm_ami_connected", "1 while logged in to Asterisk AMI", registry=registry
        )
        self.ami_reconnects = Counter(
            "icm_ami_reconnects", "AMI connections lost after login", registry=registry
        )
        self.ami_login_failures = Counter(
            "icm_ami_login_failures", "AMI logins refused or failed", registry=registry
        )
        self.ami_events = Counter("icm_ami_events", "AMI events received", registry=registry)
        self.ami_bad_frames = Counter(
            "icm_ami_bad_frames", "AMI frames skipped as malformed", registry=registry
        )
        self.handler_errors = Counter(
            "icm_event_handler_errors", "AMI events a handler failed on", registry=registry
        )
        self.requests = Counter(
            "icm_requests", "Routing requests received", ["entry"], registry=registry
        )
        self.in_flight = Gauge(
            "icm_requests_in_flight", "Routing requests being decided", registry=registry
        )
        self.decisions = Counter(
            "icm_decisions", "Routing decisions", ["status", "source"], registry=registry
        )
        self.rule_decisions = Counter(
            "icm_rule_decisions",
            "Routing decisions by the rule that made them ([rules] order) and status",
            ["rule", "status"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            "icm_lookup_seconds",
            "Time to ask the source chain",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "icm_decision_seconds",
            "Time from a routing request to its answer being sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.source_lookups = Counter(
            "icm_source_lookups",
            "Source lookups by outcome",
            ["source", "outcome"],
            registry=registry,
        )
        self.source_seconds = Histogram(
            "icm_source_seconds",
            "Time a source took to answer",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.source_cache = Counter(
            "icm_source_cache",
            "Cached source answers: hit, negative (cached 'unknown'), miss",
            ["source", "result"],
            registry=registry,
        )
        self.source_requests = Counter(
            "icm_source_requests",
            "HTTP requests sent to remote sources (CRMs) by result",
            ["source", "result"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "icm_source_circuit_open",
            "1 while a source's circuit breaker is open (the source is skipped)",
            ["source"],
            registry=registry,
        )
        self.map_refreshes = Counter(
            "icm_source_map_refreshes",
            "Background refreshes of a CRM's user map by result",
            ["source", "result"],
            registry=registry,
        )
        self.requests_shed = Counter(
            "icm_requests_shed",
            "Routing requests answered TIMEOUT at once: they waited half their budget in a"
            " backlog before the daemon read them",
            registry=registry,
        )
        self.answers_dropped = Counter(
            "icm_answers_dropped",
            "Decisions not delivered (late, AMI down, caller gone)",
            ["reason"],
            registry=registry,
        )
        self.call_outcomes = Counter(
            "icm_call_outcomes",
            "How calls handed to ICM ended, as the dialplan reports",
            ["status"],
            registry=registry,
        )
        self.learned = Counter(
            "icm_learned", "Conversations learned into the ICM database", registry=registry
        )
        self.deputy_not_learned = Counter(
            "icm_deputy_not_learned",
            "Conversations with a deputy ICM gave the call to, not learned as a binding",
            registry=registry,
        )
        self.store_errors = Counter(
            "icm_store_errors", "Store operations that failed", ["operation"], registry=registry
        )
        self.store_up = Gauge(
            "icm_store_up", "1 while the store answers its health check", registry=registry
        )
        self.learn_buffer = Gauge(
            "icm_learn_buffer",
            "Learned calls waiting to be written to the store",
            registry=registry,
        )
        self.claims = Counter(
            "icm_claims",
            "Per-call claims between instances (won, lost to another instance, unavailable)",
            ["kind", "result"],
            registry=registry,
        )
        self.reloads = Counter(
            "icm_config_reloads", "Configuration reloads", ["result"], registry=registry
        )

    def outcome(self, status: str) -> None:
        self.call_outcomes.labels(status if status in OUTCOMES else "OTHER").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
