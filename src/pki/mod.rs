//! Certificates read byte by byte, shared by the layers that hold them: the
//! SIP core's TLS listeners (their own certificate's validity) and STIR
//! (chains, TNAuthList, policies, CRLs). It names no other layer of the
//! crate, so the SIP core may use it without reaching into a policy layer.
//!
//! [`der`] is the bounds-checked DER reader; [`x509`] the certificate and
//! CRL fields; [`name`] a subject's organisation and common name for
//! people to read; [`civil`] converts between Unix seconds and calendar dates.

pub mod civil;
pub mod der;
pub mod name;
pub mod x509;
