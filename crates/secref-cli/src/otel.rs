//! OTLP export of secref's own tracing spans (feature `otel`).
//!
//! Configured only by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (without either nothing is
//! started), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME` (default `secref`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*` and `OTEL_SDK_DISABLED`.
//!
//! Only **spans** whose target is a secref crate are exported, never log
//! events: a span's fields are the attributes, and secref's spans are
//! written to carry only schemes, provider names, counts, outcome codes,
//! policy effects / rule ids and HTTP route templates — never a reference
//! path, a value or a token. Spans go through the SDK's batch processor: a
//! bounded queue a read only `try_send`s into, exported from its own thread,
//! so a slow or dead collector never slows or fails a read.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Spans lost because their export failed (collector down, refused, timed
/// out), through the `metrics` facade (`/metrics` of `secref serve`).
pub const SPANS_DROPPED: &str = "secref_otel_spans_dropped_total";

/// How long flushing at exit may take, so a dead collector cannot hold a
/// finished command.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter; [`Otel::shutdown`] flushes what is queued.
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// Flushes the queued spans and stops the exporter thread (bounded by
    /// [`FLUSH_TIMEOUT`]). Called after the command finished, outside the
    /// async runtime (the blocking HTTP client must not run inside it).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "OpenTelemetry: flushing spans failed");
        }
    }
}

/// What [`init`] decided, from the environment alone.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Off,
    Export,
    Unsupported(String),
}

fn plan(var: impl Fn(&str) -> Option<String>) -> Plan {
    let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Plan::Off;
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Plan::Off;
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    if protocol.trim() != "http/protobuf" {
        return Plan::Unsupported(protocol);
    }
    Plan::Export
}

/// The tracing layer exporting secref's spans, and the handle that flushes
/// them; `None` when no endpoint is configured (then nothing runs at all).
/// Must be called outside an async runtime (it builds a blocking client).
pub fn init<S>() -> Option<(impl Layer<S>, Otel)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    match plan(|k| std::env::var(k).ok()) {
        Plan::Off => return None,
        Plan::Unsupported(p) => {
            eprintln!(
                "warning: OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported (only http/protobuf): traces are not exported"
            );
            return None;
        }
        Plan::Export => {}
    }
    // Endpoint, headers and timeout come from the OTEL_EXPORTER_OTLP_*
    // variables, read by the builder itself.
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OpenTelemetry exporter not started: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name("secref");
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(Counting(exporter)).build())
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("secref");
    // Spans of secref's own crates only: no events (their messages and
    // fields are written for the local log, not for a remote collector) and
    // nothing from dependencies (HTTP clients, the exporter itself).
    let only_secref_spans = filter_fn(|m| m.is_span() && m.target().starts_with("secref"))
        .with_max_level_hint(tracing::level_filters::LevelFilter::DEBUG);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(only_secref_spans);
    Some((layer, Otel { provider }))
}

/// The OTLP exporter, counting the spans of every batch it fails to send.
#[derive(Debug)]
struct Counting(opentelemetry_otlp::SpanExporter);

impl SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.0.export(batch).await;
        if r.is_err() {
            metrics::counter!(SPANS_DROPPED).increment(n);
        }
        r
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert_eq!(plan(env(&[])), Plan::Off);
        assert_eq!(
            plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Plan::Off
        );
        assert_eq!(
            plan(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:1/v1/traces"
            )])),
            Plan::Export
        );
    }

    #[test]
    fn sdk_disabled_wins_and_only_http_protobuf_is_exported() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(plan(env(&[ep, ("OTEL_SDK_DISABLED", "TRUE")])), Plan::Off);
        assert_eq!(
            plan(env(&[ep, ("OTEL_SDK_DISABLED", "false")])),
            Plan::Export
        );
        assert_eq!(
            plan(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])),
            Plan::Export
        );
        assert_eq!(
            plan(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])),
            Plan::Unsupported("grpc".into())
        );
    }
}
