"""The messaging metrics of the semantic conventions, through the OpenTelemetry
metrics API: they record nothing until the application configures a MeterProvider
(the API's default is a no-op one, and its proxy meter binds to the provider set later)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import metrics

from aioqueue import __version__

# the ExplicitBucketBoundaries advisory the conventions give for both duration histograms
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

Attributes = Mapping[str, str | int]


class Instruments:
    """The four instruments, made once per middleware.

    Attributes:
        sent: ``messaging.client.sent.messages``: jobs an enqueue call tried to send.
        operation_duration: ``messaging.client.operation.duration``: an enqueue call
            (``send``) or an outcome's write (``settle``), in seconds.
        consumed: ``messaging.client.consumed.messages``: deliveries handed to a task.
        process_duration: ``messaging.process.duration``: one attempt, in seconds.
    """

    __slots__ = ("consumed", "operation_duration", "process_duration", "sent")

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter("aioqueue.otel", __version__, meter_provider=meter_provider)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description=(
                "Duration of messaging operation initiated by a producer or consumer client."
            ),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
