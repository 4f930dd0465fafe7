"""OpenTelemetry tracing, off by default, on with ``OTEL_EXPORTER_OTLP_ENDPOINT``.

When on, every request a service answers is a span, and every call the gateway makes carries
the trace context (to the feature-store through httpx, instrumented; to the recommenders
through the fastpath client, which ``gateway.clients`` gives the context by hand), so one
request is one trace across services. Spans go to an OTLP/HTTP collector in batches
(``OTEL_BSP_SCHEDULE_DELAY`` and the other standard OTEL_* variables apply). No span carries
a query string: ``recsys_shared.trace_redaction`` replaces them before anything exports it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from recsys_shared.settings import ServiceSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

log = logging.getLogger(__name__)

#: For every ``FastAPI(telemetry=...)`` of the system, and the benchmark's baseline. FastAPI's
#: own OpenTelemetry support asks the global providers whether it is wanted on every request
#: (an environment lookup each time: 5% of a cached request). Tracing here is
#: :func:`setup_tracing`'s and metrics are Prometheus', so it is switched off.
FASTAPI_TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def setup_tracing(app: FastAPI, settings: ServiceSettings) -> bool:
    """Instrument the app (and outgoing httpx calls) when an OTLP endpoint is configured."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider = tracer_provider(settings.service_name, BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument(app, provider)
    log.info("tracing to %s", endpoint)
    return True


def tracer_provider(service_name: str, exporting: SpanProcessor) -> TracerProvider:
    """A provider whose spans reach ``exporting`` with their query strings redacted."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from recsys_shared.trace_redaction import QueryRedactor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(QueryRedactor())
    provider.add_span_processor(exporting)
    return provider


def instrument(app: FastAPI, provider: TracerProvider) -> None:
    """Spans for the requests ``app`` answers and for every httpx request of the process."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from recsys_shared.trace_redaction import server_request_hook

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, server_request_hook=server_request_hook
    )
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
