//! The gate as the admin API sees it ([`crate::api::Service`]): readiness,
//! reload, and the metrics of every part of the running service in one
//! exposition.

use super::Gate;

impl crate::api::Service for Gate {
    fn is_ready(&self) -> bool {
        Gate::is_ready(self)
    }

    fn metrics_text(&self) -> String {
        let mut text = self.metrics.render();
        self.render_udp_guard(&mut text);
        self.state.metrics().render(&mut text);
        if let Some(pool) = &self.offload {
            pool.render(&mut text);
        }
        if let Some(media) = &self.media {
            media.anchor.relay().render(&mut text);
            media.ng_metrics.render(&mut text);
        }
        if let Some(audit) = &self.audit {
            audit.metrics().render(&mut text);
        }
        text
    }

    fn reload(&self) -> Result<(), String> {
        Gate::reload(self)
    }
}
