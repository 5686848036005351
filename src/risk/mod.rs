//! The risk engine (phase `assess`): named signals of a call in, a scored,
//! levelled decision with reason codes and restricted actions out, under
//! the operator's policy. Pure and synchronous: the gate gathers the inputs
//! (verification, velocity counts) and applies the decision (`route`, `tag`).
//!
//! * [`signals`] — the signals, each computed once;
//! * [`lists`] — operator number lists;
//! * [`condition`] — the rule condition language (three-valued);
//! * [`policy`] — the policy file: rules, levels, actions;
//! * [`assess`] — signals from a SIP request, and the decision;
//! * [`tags`] — the `X-Callgate-*` headers and History-Info for the PBX;
//! * [`replay`] — a candidate policy over recorded calls (what-if).

pub mod assess;
pub mod condition;
pub mod lists;
pub mod policy;
pub mod replay;
pub mod signals;
pub mod tags;
