//! The policy file (`risk::policy`): written by an operator, but a typo
//! must give an error naming the key, never a panic at load or reload.

use std::path::Path;

use crate::risk::policy::Policy;
use crate::risk::signals::Signals;

/// Compiles `data` as policy text (list files resolve under a directory
/// that does not exist) and decides on default and fixed signals.
pub fn exercise(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let Ok(policy) = Policy::parse(text, Path::new("/nonexistent/callgate-fuzz")) else {
        return 1;
    };
    let mut signals = Signals {
        calling: "15550199".into(),
        called: "15550100".into(),
        attest: Some('C'),
        ..Signals::default()
    };
    let mut sum = policy.decide(&Signals::default()).reasons().count();
    sum += policy.decide(&signals).reasons().count();
    signals.replayed = true;
    signals.anonymous = true;
    sum += policy.decide(&signals).reasons().count();
    sum += policy.lists_of("15550199").len();
    sum
}
