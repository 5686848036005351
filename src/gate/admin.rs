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
        if let Some(cluster) = &self.cluster {
            cluster.encode(e)?;
        }
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
        if let Some(events) = &self.events {
            events.encode(e)?;
        }
        Ok(())
    }

    fn subscribe_events(
        &self,
        last_event_id: Option<&str>,
    ) -> Result<crate::api::stream::EventFeed, crate::api::operations::OperationError> {
        use crate::api::operations::OperationError;
        let Some(events) = &self.events else {
            return Err(OperationError::NotFound(
                "events are not configured ([events])".to_owned(),
            ));
        };
        events.subscribe(last_event_id).map_err(|e| match e {
            crate::events::SubscribeError::Full => OperationError::Conflict(e.to_string()),
            crate::events::SubscribeError::Outbox(_) => OperationError::Refused(e.to_string()),
        })
    }

    fn reload(&self) -> Result<(), String> {
        Gate::reload(self)
    }
}
