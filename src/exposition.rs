//! The Prometheus exposition of `/metrics`, encoded by the
//! `prometheus-client` crate (text format 0.0.4): every part of callgate
//! keeps its counters as plain atomics on its own path and writes them,
//! at scrape time, through the small helpers here. The crate's encoder
//! escapes label values and help text (`\\`, `"`, newline) as the
//! exposition format requires, so an operator's string in a label (a
//! policy version) cannot break the scrape (issue 15), and it writes
//! counters under their `_total` name and histogram bounds as Go clients
//! do.
//!
//! docs/decisions/0007-metrics-exposition.md says why the atomics stay
//! and only the encoding moved.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`text`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Labels of one sample: `(name, value)` pairs, values escaped on output.
pub type Labels<'a> = [(&'a str, &'a str)];

/// A part of callgate that writes metric families at scrape time.
pub trait Exposed: Send + Sync + 'static {
    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result;
}

/// Registers a shared part with the registry of a scrape.
struct Part<T: ?Sized>(Arc<T>);

impl<T: ?Sized> fmt::Debug for Part<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("metrics part")
    }
}

impl<T: Exposed + ?Sized> Collector for Part<T> {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.encode(&mut e)
    }
}

/// `part` as a collector of a registry: encoded at each scrape.
pub fn collector<T: Exposed + ?Sized>(part: Arc<T>) -> Box<dyn Collector> {
    Box::new(Part(part))
}

/// A registry of the given parts, encoded in order.
pub fn registry(parts: impl IntoIterator<Item = Box<dyn Collector>>) -> Registry {
    let mut registry = Registry::default();
    for part in parts {
        registry.register_collector(part);
    }
    registry
}

/// The text exposition of `registry`. Encoding into a `String` cannot
/// fail but for a collector's own error, which is logged (the scrape
/// then ends where it failed rather than not at all).
pub fn text(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding /metrics failed");
    }
    out
}

/// The text exposition of one part alone (tests, `callgate demo`).
pub fn text_of<T: Exposed + ?Sized>(part: Arc<T>) -> String {
    text(&registry([collector(part)]))
}

/// A family of `kind` whose sample name is `name`. Counters and infos
/// are named with their suffix (`_total`, `_info`), as scraped: the
/// encoder writes the suffix itself, so it is taken off here.
fn family<'e>(
    e: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, fmt::Error> {
    let suffix = match kind {
        MetricType::Counter => "_total",
        MetricType::Info => "_info",
        _ => "",
    };
    let base = name.strip_suffix(suffix).unwrap_or(name);
    debug_assert!(
        suffix.is_empty() || base.len() < name.len(),
        "{name} must end in {suffix}"
    );
    Ok(Family(e.encode_descriptor(base, help, None, kind)?))
}

/// A counter family; `name` ends in `_total`.
pub fn counter<'e>(
    e: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
) -> Result<Family<'e>, fmt::Error> {
    family(e, name, help, MetricType::Counter)
}

/// A gauge family.
pub fn gauge<'e>(
    e: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
) -> Result<Family<'e>, fmt::Error> {
    family(e, name, help, MetricType::Gauge)
}

/// An info family (a gauge of 1 whose labels are the information); `name`
/// ends in `_info`.
pub fn info<'e>(
    e: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
) -> Result<Family<'e>, fmt::Error> {
    family(e, name, help, MetricType::Info)
}

/// A histogram family.
pub fn histogram<'e>(
    e: &'e mut DescriptorEncoder<'_>,
    name: &'e str,
    help: &str,
) -> Result<Family<'e>, fmt::Error> {
    family(e, name, help, MetricType::Histogram)
}

/// One family being written: a sample per label set.
pub struct Family<'e>(MetricEncoder<'e>);

impl Family<'_> {
    /// A counter sample.
    pub fn counter(&mut self, labels: &Labels<'_>, v: u64) -> fmt::Result {
        self.0
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&v, None)
    }

    /// A counter sample of a real value (seconds).
    pub fn counter_f64(&mut self, labels: &Labels<'_>, v: f64) -> fmt::Result {
        self.0
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, f64, u64>(&v, None)
    }

    /// A gauge sample.
    pub fn gauge(&mut self, labels: &Labels<'_>, v: i64) -> fmt::Result {
        self.0.encode_family(&labels)?.encode_gauge(&v)
    }

    /// A gauge sample of a real value.
    pub fn gauge_f64(&mut self, labels: &Labels<'_>, v: f64) -> fmt::Result {
        self.0.encode_family(&labels)?.encode_gauge(&v)
    }

    /// The info sample.
    pub fn info(&mut self, labels: &Labels<'_>) -> fmt::Result {
        self.0.encode_info(&labels)
    }

    /// A histogram: `buckets` holds each bucket's upper bound and the
    /// observations in it alone (not cumulative); `count` counts them all,
    /// those above the last bound too (the `+Inf` bucket).
    pub fn histogram(
        &mut self,
        labels: &Labels<'_>,
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) -> fmt::Result {
        self.0
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, buckets, None)
    }
}

/// A counter family of one unlabelled sample.
pub fn one_counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    counter(e, name, help)?.counter(&[], v)
}

/// A gauge family of one unlabelled sample.
pub fn one_gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> fmt::Result {
    gauge(e, name, help)?.gauge(&[], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sample;

    impl Exposed for Sample {
        fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
            counter(e, "x_requests_total", "Requests.")?.counter(&[("side", "trunk")], 3)?;
            info(e, "x_policy_info", "Policy.")?.info(&[("version", "v\"1\\2\nthree")])?;
            histogram(e, "x_seconds", "Time.")?.histogram(
                &[("phase", "verify")],
                0.4,
                2,
                &[(0.005, 1), (0.25, 0)],
            )
        }
    }

    #[test]
    fn families_keep_their_names_and_escape_label_values() {
        let text = text_of(Arc::new(Sample));
        for line in [
            "# TYPE x_requests_total counter",
            "x_requests_total{side=\"trunk\"} 3",
            "# TYPE x_policy_info gauge",
            "x_policy_info{version=\"v\\\"1\\\\2\\nthree\"} 1",
            "x_seconds_bucket{phase=\"verify\",le=\"0.005\"} 1",
            "x_seconds_bucket{phase=\"verify\",le=\"0.25\"} 1",
            "x_seconds_bucket{phase=\"verify\",le=\"+Inf\"} 2",
            "x_seconds_count{phase=\"verify\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
