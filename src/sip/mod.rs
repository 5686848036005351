//! SIP plumbing: parsing, splicing, transactions, transports and the proxy core.

pub mod dialogs;
pub mod error;
pub mod fuzzing;
pub mod header;
pub mod message;
pub mod method;
pub mod parties;
pub mod proxy;
pub mod response;
pub mod scan;
pub mod side;
pub mod splice;
pub mod tally;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod via;
