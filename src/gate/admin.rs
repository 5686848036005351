//! The gate as the admin API sees it ([`crate::api::Service`]): readiness,
//! reload, and the metrics of every part of the running service in one
//! exposition.

use super::Gate;

impl crate::api::Service for Gate {
    fn is_ready(&self) -> bool {
        Gate::is_ready(self)
    }

    fn encode_metrics(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::Exposed;
        self.metrics.encode(e)?;
        self.encode_udp_guard(e)?;
        self.dns.encode(e)?;
        self.state.metrics().encode(e)?;
        if let Some(pool) = &self.offload {
            pool.encode(e)?;
        }
        if let Some(media) = &self.media {
            media.anchor.relay().encode(e)?;
            media.ng_metrics.encode(e)?;
        }
        if let Some(audit) = &self.audit {
            audit.metrics().encode(e)?;
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), String> {
        Gate::reload(self)
    }
}
