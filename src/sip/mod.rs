//! SIP plumbing: parsing, splicing, transactions, transports and the proxy core.

pub mod header;
pub mod message;
pub mod method;
pub mod response;
pub mod splice;
pub mod uri;
pub mod via;
