//! The dialogs callgate record-routed (RFC 3261 §12), so that the classify
//! phase knows a dialog instead of assuming one: a request carrying a To
//! tag belongs to a dialog only when the Call-ID and both tags match one
//! that callgate saw created through itself, from the side that party
//! speaks on. Such a request then goes along that dialog's route only
//! (§12.2.1.1: its route set, else its remote target); any other is a stray.
//!
//! A dialog is learnt in two steps: the initial request that callgate
//! record-routes leaves a *pending* entry (Call-ID, caller's tag, the
//! caller's side and the hop back to the caller); a response with a To tag
//! (101–299, §12.1.1) from the other side then makes the dialog — early on
//! a provisional, confirmed on a 2xx. A final failure ends its early one;
//! a BYE ends a dialog after a grace period (retransmissions and its 200
//! still match); an idle dialog is forgotten after `idle`.
//!
//! Sans-IO: fed parsed messages and instants; bounded in size (the oldest
//! entries go first when full, counted in [`DialogTable::evicted`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sip::message::{HeaderName, SipMessage};
use crate::sip::method::Method;
use crate::sip::proxy::{next_hop, Peer};
use crate::sip::side::Side;
use crate::sip::uri::NameAddr;

/// Bounds and lifetimes of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialogLimits {
    /// Most dialogs kept (early and confirmed).
    pub max_dialogs: usize,
    /// Most initial requests awaiting their dialog-creating response.
    pub max_pending: usize,
    /// An initial request's entry lives this long after its last response.
    pub pending_for: Duration,
    /// A dialog with no request for this long is forgotten.
    pub idle: Duration,
    /// A dialog still matches this long after its BYE (§17.2.2: Timer J).
    pub ending_for: Duration,
}

impl Default for DialogLimits {
    fn default() -> Self {
        DialogLimits {
            max_dialogs: 200_000,
            max_pending: 100_000,
            pending_for: Duration::from_secs(200),
            idle: Duration::from_secs(12 * 3600),
            ending_for: Duration::from_secs(32),
        }
    }
}

/// Key of an initial request: Call-ID and the caller's From tag.
type PendingKey = Vec<u8>;
/// Key of a dialog: Call-ID, caller's tag, callee's tag (§12: the dialog ID).
type DialogKey = Vec<u8>;

/// Longest key kept as written; a longer one (a Call-ID or tag of up to a
/// whole message's size, the sender's choice) is kept as its SHA-256, so
/// an entry costs at most this much however long its parts: the table's
/// bytes are bounded by `max_dialogs`, not by what the trunk sends.
const MAX_PLAIN_KEY: usize = 256;

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        k.extend_from_slice(p);
        k.push(0);
    }
    if k.len() <= MAX_PLAIN_KEY {
        return k; // ends with 0
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &k);
    let mut short = Vec::with_capacity(33);
    short.extend_from_slice(digest.as_ref());
    short.push(1); // a plain key ends with 0: the two kinds never meet
    short
}

#[derive(Debug)]
struct Pending {
    caller_side: Side,
    /// Where requests to the caller go (its route set or Contact).
    to_caller: Option<Peer>,
    until: Instant,
}

#[derive(Debug, Clone)]
struct Dialog {
    caller_side: Side,
    /// Where requests going out to each side go ([`Side::index`]).
    hops: [Option<Peer>; 2],
    /// Whether that hop is the party's Contact (then a target refresh,
    /// §12.2, updates it) rather than its route set.
    by_contact: [bool; 2],
    confirmed: bool,
    /// Its BYE was seen (queued once in `ending`, however many come).
    ending: bool,
    until: Instant,
}

/// What the table says about a request with a To tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A dialog callgate knows, requested from the side its party speaks
    /// on: forward to this hop (`None`: by the request's own Route or
    /// Request-URI).
    Known(Option<Peer>),
    /// No such dialog (or from the wrong side).
    Stray,
}

/// The table. See the module documentation.
#[derive(Debug)]
pub struct DialogTable {
    limits: DialogLimits,
    pending: HashMap<PendingKey, Pending, ahash::RandomState>,
    pending_order: VecDeque<PendingKey>,
    dialogs: HashMap<DialogKey, Dialog, ahash::RandomState>,
    dialog_order: VecDeque<DialogKey>,
    /// Dialogs whose BYE was seen, in the order their grace ends.
    ending: VecDeque<(Instant, DialogKey)>,
    evicted: u64,
}

/// Methods whose initial request callgate record-routes and which create a
/// dialog (RFC 3261 §12.1, RFC 6665 §4.1 SUBSCRIBE, RFC 3515 REFER).
pub fn creates_dialog(method: Method) -> bool {
    matches!(method, Method::Invite | Method::Subscribe | Method::Refer)
}

/// The hop a URI names, on `side`.
fn hop_on(side: Side, uri: &[u8]) -> Option<Peer> {
    let uri = NameAddr::parse(uri).map(|na| na.uri).unwrap_or(uri);
    let (addr, transport) = next_hop(uri)?;
    Some(Peer {
        side,
        transport,
        addr,
        conn: None,
    })
}

/// Every value of a header, in order (§7.3.1: comma-joined or repeated).
fn all_values(msg: &SipMessage, name: HeaderName) -> Vec<&[u8]> {
    msg.values(name)
        .flat_map(|v| crate::sip::scan::split_top(v, b',').unwrap_or_default())
        .map(crate::sip::scan::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

fn contact_hop(msg: &SipMessage, side: Side) -> Option<Peer> {
    msg.values(HeaderName::Contact)
        .next()
        .and_then(|c| hop_on(side, c))
}

impl DialogTable {
    pub fn new(limits: DialogLimits) -> DialogTable {
        DialogTable {
            limits,
            pending: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            pending_order: VecDeque::new(),
            dialogs: HashMap::with_hasher(crate::sip::proxy::keyed_hasher()),
            dialog_order: VecDeque::new(),
            ending: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Dialogs known now (early and confirmed).
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Initial requests awaiting their dialog-creating response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Entries dropped because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// An initial dialog-creating request callgate forwards, received from
    /// `side`. The hop back to the caller is the top Record-Route it
    /// carried (the next proxy towards the caller), else its Contact.
    pub fn initial(&mut self, msg: &SipMessage, side: Side, now: Instant) {
        let (Some(call_id), Some(tag)) = (msg.call_id(), msg.from_tag()) else {
            return;
        };
        let to_caller = match all_values(msg, HeaderName::RecordRoute).first() {
            Some(rr) => hop_on(side, rr),
            None => contact_hop(msg, side),
        };
        self.expire(now);
        let k = key(&[call_id, tag]);
        if !self.pending.contains_key(&k) {
            if self.pending.len() >= self.limits.max_pending {
                self.evict_pending();
            }
            self.pending_order.push_back(k.clone());
        }
        self.pending.insert(
            k,
            Pending {
                caller_side: side,
                to_caller,
                until: now + self.limits.pending_for,
            },
        );
    }

    /// A response arriving from `side`: one with a To tag to a pending
    /// initial request makes (or confirms) its dialog; a final failure
    /// ends its branch's early one. `is_me` tells callgate's own Record-Route
    /// entries: the one above them is the next hop towards the callee.
    pub fn response(
        &mut self,
        msg: &SipMessage,
        side: Side,
        is_me: impl Fn(&[u8]) -> bool,
        now: Instant,
    ) {
        let (Some(status), Ok(cseq), Some(call_id), Some(caller_tag)) =
            (msg.status(), msg.cseq(), msg.call_id(), msg.from_tag())
        else {
            return;
        };
        if !creates_dialog(cseq.method) || status == 100 {
            return;
        }
        let pk = key(&[call_id, caller_tag]);
        let Some(p) = self.pending.get_mut(&pk) else {
            return;
        };
        if p.caller_side != side.other() {
            return;
        }
        p.until = now + self.limits.pending_for;
        if status >= 300 {
            // §12.3, §13.2.2.4: a failure ends the early dialog of its
            // branch. The request itself may still fail over to another
            // target, so its pending entry stays (until it expires).
            if let Some(callee) = msg.to_tag() {
                let dk = key(&[call_id, caller_tag, callee]);
                if self.dialogs.get(&dk).is_some_and(|d| !d.confirmed) {
                    self.dialogs.remove(&dk);
                }
            }
            return;
        }
        let Some(callee_tag) = msg.to_tag() else {
            return;
        };
        let caller_side = p.caller_side;
        let to_caller = p.to_caller;
        let confirmed = (200..300).contains(&status);
        let dk = key(&[call_id, caller_tag, callee_tag]);
        self.expire(now);
        let idle = self.limits.idle;
        match self.dialogs.get_mut(&dk) {
            // Its provisional made it: the 2xx confirms it (its route set
            // is the same, §12.1.2).
            Some(d) => {
                d.confirmed |= confirmed;
                d.until = now + idle;
            }
            None => {
                // The hop towards the callee: the Record-Route above
                // callgate's own, else the Contact. callgate records two
                // routes (one per side): with no more than those, there
                // is no proxy between it and the callee, and nothing to
                // look for.
                let rrs = all_values(msg, HeaderName::RecordRoute);
                let above = if rrs.len() <= 2 {
                    None
                } else {
                    rrs.iter().position(|rr| is_me(rr)).filter(|i| *i > 0)
                };
                let (to_callee, by_contact) = match above {
                    Some(i) => (hop_on(side, rrs[i - 1]), false),
                    None => (contact_hop(msg, side), true),
                };
                let mut hops = [None, None];
                hops[caller_side.index()] = to_caller;
                hops[side.index()] = to_callee;
                let mut by = [false, false];
                by[side.index()] = by_contact;
                self.insert(
                    dk,
                    Dialog {
                        caller_side,
                        hops,
                        by_contact: by,
                        confirmed,
                        ending: false,
                        until: now + idle,
                    },
                );
            }
        }
        // callgate tries targets one at a time: after a 2xx no other
        // branch makes a dialog of this INVITE.
        if confirmed && cseq.method == Method::Invite {
            self.pending.remove(&pk);
        }
    }

    /// A request with a To tag, received from `side`: whether it belongs
    /// to a known dialog, and where it goes. A BYE starts the dialog's
    /// end; a target refresh (re-INVITE, UPDATE, §12.2.2) from a party
    /// reached by its Contact updates that hop.
    pub fn request(&mut self, msg: &SipMessage, side: Side, now: Instant) -> Membership {
        self.expire(now);
        let (Some(call_id), Some(from_tag), Some(to_tag), Some(method)) =
            (msg.call_id(), msg.from_tag(), msg.to_tag(), msg.method())
        else {
            return Membership::Stray;
        };
        // From the caller: (From, To) = (caller, callee); from the callee
        // the other way round. Either way only from that party's side.
        let as_caller = key(&[call_id, from_tag, to_tag]);
        let as_callee = key(&[call_id, to_tag, from_tag]);
        let found = match self.dialogs.get(&as_caller) {
            Some(d) if d.caller_side == side => Some(as_caller),
            _ => match self.dialogs.get(&as_callee) {
                Some(d) if d.caller_side == side.other() => Some(as_callee),
                _ => None,
            },
        };
        let Some(k) = found else {
            return self.notify_of_pending(msg, side, now);
        };
        let ending_for = self.limits.ending_for;
        let idle = self.limits.idle;
        let Some(d) = self.dialogs.get_mut(&k) else {
            return Membership::Stray;
        };
        if d.until <= now {
            // Ended (or idle) behind an older entry of the queue.
            self.dialogs.remove(&k);
            return Membership::Stray;
        }
        if matches!(method, Method::Invite | Method::Update) && d.by_contact[side.index()] {
            if let Some(h) = contact_hop(msg, side) {
                d.hops[side.index()] = Some(h);
            }
        }
        let hop = d.hops[side.other().index()];
        if method == Method::Bye {
            if !d.ending {
                d.ending = true;
                d.until = now + ending_for;
                self.ending.push_back((d.until, k));
            }
        } else {
            d.until = d.until.max(now + idle);
        }
        Membership::Known(hop)
    }

    /// A NOTIFY may create the dialog of a pending SUBSCRIBE (RFC 6665
    /// §4.1.2.4): its To tag is the subscriber's, its From tag new.
    fn notify_of_pending(&mut self, msg: &SipMessage, side: Side, now: Instant) -> Membership {
        let (Some(Method::Notify), Some(call_id), Some(from_tag), Some(to_tag)) =
            (msg.method(), msg.call_id(), msg.from_tag(), msg.to_tag())
        else {
            return Membership::Stray;
        };
        let pk = key(&[call_id, to_tag]);
        let Some(p) = self.pending.get(&pk) else {
            return Membership::Stray;
        };
        if p.caller_side != side.other() {
            return Membership::Stray;
        }
        let mut hops = [None, None];
        hops[p.caller_side.index()] = p.to_caller;
        hops[side.index()] = contact_hop(msg, side);
        let to_subscriber = p.to_caller;
        let dk = key(&[call_id, to_tag, from_tag]);
        self.insert(
            dk,
            Dialog {
                caller_side: side.other(),
                hops,
                by_contact: [true, true],
                confirmed: true,
                ending: false,
                until: now + self.limits.idle,
            },
        );
        Membership::Known(to_subscriber)
    }

    /// Forgets what has expired: ended dialogs (their BYE's grace is
    /// over, in order), then idle dialogs and stale pending requests from
    /// the front of their creation-order queues (one refreshed since is
    /// caught when it reaches the front or is next looked up).
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.ending.front() {
            if *at > now {
                break;
            }
            if let Some((_, k)) = self.ending.pop_front() {
                if self.dialogs.get(&k).is_some_and(|d| d.until <= now) {
                    self.dialogs.remove(&k);
                }
            }
        }
        while let Some(k) = self.pending_order.front() {
            match self.pending.get(k) {
                Some(p) if p.until > now => break,
                Some(_) => {
                    self.pending.remove(k);
                }
                None => {}
            }
            self.pending_order.pop_front();
        }
        for _ in 0..self.dialog_order.len() {
            let Some(k) = self.dialog_order.front() else {
                break;
            };
            match self.dialogs.get(k) {
                Some(d) if d.until > now => break,
                Some(_) => {
                    self.dialogs.remove(k);
                }
                None => {}
            }
            self.dialog_order.pop_front();
        }
        self.compact();
    }

    /// Drops the keys of entries already gone (ended by a BYE, confirmed,
    /// evicted) from the creation-order queues once they outnumber the
    /// live entries: the queues stay within twice the table's size.
    /// Amortized O(1): a pass follows at least as many removals as it
    /// visits.
    fn compact(&mut self) {
        if self.dialog_order.len() > 2 * self.dialogs.len() + 1024 {
            let dialogs = &self.dialogs;
            self.dialog_order.retain(|k| dialogs.contains_key(k));
        }
        if self.pending_order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.pending_order.retain(|k| pending.contains_key(k));
        }
    }

    /// A new dialog, the oldest one forgotten first when the table is full.
    fn insert(&mut self, k: DialogKey, d: Dialog) {
        if self.dialogs.len() >= self.limits.max_dialogs {
            self.evict_dialog();
        }
        self.dialog_order.push_back(k.clone());
        self.dialogs.insert(k, d);
    }

    fn evict_pending(&mut self) {
        while let Some(k) = self.pending_order.pop_front() {
            if self.pending.remove(&k).is_some() {
                self.evicted += 1;
                return;
            }
        }
    }

    fn evict_dialog(&mut self) {
        while let Some(k) = self.dialog_order.pop_front() {
            if self.dialogs.remove(&k).is_some() {
                self.evicted += 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Limits;

    const ME: &str = "192.0.2.99";

    fn parse(text: &str) -> SipMessage {
        match SipMessage::parse(
            bytes::Bytes::from(text.replace('\n', "\r\n")),
            &Limits::default(),
        ) {
            Ok(m) => m,
            Err(e) => panic!("{e}: {text}"),
        }
    }

    fn invite(call: &str, extra: &str) -> SipMessage {
        parse(&format!(
            "INVITE sip:+15550100@pbx SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\nFrom: <sip:+1555@carrier>;tag=caller\nTo: <sip:+15550100@pbx>\nCall-ID: {call}\nCSeq: 1 INVITE\nContact: <sip:+1555@198.51.100.1:5070>\n{extra}Content-Length: 0\n\n"
        ))
    }

    fn response(call: &str, status: u16, to_tag: &str, extra: &str) -> SipMessage {
        parse(&format!(
            "SIP/2.0 {status} X\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\nFrom: <sip:+1555@carrier>;tag=caller\nTo: <sip:+15550100@pbx>;tag={to_tag}\nCall-ID: {call}\nCSeq: 1 INVITE\nContact: <sip:agent@10.0.0.5:5080>\n{extra}Content-Length: 0\n\n"
        ))
    }

    fn request(method: &str, call: &str, from_tag: &str, to_tag: &str) -> SipMessage {
        parse(&format!(
            "{method} sip:x@10.0.0.5 SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK2\nFrom: <sip:a@b>;tag={from_tag}\nTo: <sip:c@d>;tag={to_tag}\nCall-ID: {call}\nCSeq: 2 {method}\nContact: <sip:moved@10.0.0.6:5090>\nContent-Length: 0\n\n"
        ))
    }

    fn is_me(rr: &[u8]) -> bool {
        String::from_utf8_lossy(rr).contains(ME)
    }

    fn hop(m: Membership) -> Option<String> {
        match m {
            Membership::Known(h) => Some(h.map(|p| p.addr.to_string()).unwrap_or_default()),
            Membership::Stray => None,
        }
    }

    /// A trunk call answered 200 by the PBX, at `t`: its pending entry is
    /// gone once the dialog is confirmed.
    fn answered(t: &mut DialogTable, call: &str, now: Instant) {
        t.initial(&invite(call, ""), Side::Trunk, now);
        assert!(t.pending() >= 1);
        let before = t.pending();
        t.response(&response(call, 200, "callee", ""), Side::Pbx, is_me, now);
        assert_eq!(t.pending(), before - 1);
    }

    #[test]
    fn a_dialog_is_known_from_each_party_side_only_with_both_tags() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        answered(&mut t, "c1", now);
        assert_eq!(t.len(), 1);
        // From the caller (trunk): to the callee's Contact.
        let bye = request("BYE", "c1", "caller", "callee");
        assert_eq!(
            hop(t.request(&bye, Side::Trunk, now)).as_deref(),
            Some("10.0.0.5:5080")
        );
        // From the callee (PBX), tags the other way: to the caller's Contact.
        let bye = request("BYE", "c1", "callee", "caller");
        assert_eq!(
            hop(t.request(&bye, Side::Pbx, now)).as_deref(),
            Some("198.51.100.1:5070")
        );
        // The caller's orientation from the PBX side, a wrong tag, another call.
        for (m, side) in [
            (request("BYE", "c1", "caller", "callee"), Side::Pbx),
            (request("BYE", "c1", "caller", "forged"), Side::Trunk),
            (request("BYE", "c2", "caller", "callee"), Side::Trunk),
        ] {
            assert_eq!(t.request(&m, side, now), Membership::Stray);
        }
    }

    #[test]
    fn no_dialog_without_a_pending_request_or_from_the_callers_side() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        // A response with no initial request behind it makes nothing.
        t.response(&response("c1", 200, "callee", ""), Side::Pbx, is_me, now);
        // Nor one from the side the request came from.
        t.initial(&invite("c2", ""), Side::Trunk, now);
        t.response(&response("c2", 200, "callee", ""), Side::Trunk, is_me, now);
        // 100 Trying has no To tag to speak of.
        t.response(&response("c2", 100, "callee", ""), Side::Pbx, is_me, now);
        assert!(t.is_empty());
    }

    #[test]
    fn the_route_set_beyond_callgate_is_the_next_hop() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        let rr = format!(
            "Record-Route: <sip:10.9.9.9:5062;lr>, <sip:{ME}:5062;lr>\nRecord-Route: <sip:{ME}:5060;lr>\n"
        );
        t.initial(
            &invite("c1", "Record-Route: <sip:203.0.113.7:5060;lr>\n"),
            Side::Trunk,
            now,
        );
        t.response(&response("c1", 200, "callee", &rr), Side::Pbx, is_me, now);
        let to_pbx = request("INFO", "c1", "caller", "callee");
        assert_eq!(
            hop(t.request(&to_pbx, Side::Trunk, now)).as_deref(),
            Some("10.9.9.9:5062")
        );
        let to_trunk = request("INFO", "c1", "callee", "caller");
        assert_eq!(
            hop(t.request(&to_trunk, Side::Pbx, now)).as_deref(),
            Some("203.0.113.7:5060")
        );
    }

    #[test]
    fn a_failed_branch_ends_its_early_dialog_and_failover_makes_another() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        t.initial(&invite("c1", ""), Side::Trunk, now);
        t.response(&response("c1", 180, "first", ""), Side::Pbx, is_me, now);
        let prack = request("PRACK", "c1", "caller", "first");
        assert!(hop(t.request(&prack, Side::Trunk, now)).is_some());
        t.response(&response("c1", 503, "first", ""), Side::Pbx, is_me, now);
        assert_eq!(t.request(&prack, Side::Trunk, now), Membership::Stray);
        t.response(&response("c1", 200, "second", ""), Side::Pbx, is_me, now);
        let ack = request("ACK", "c1", "caller", "second");
        assert!(hop(t.request(&ack, Side::Trunk, now)).is_some());
        // A late failure does not end a confirmed dialog.
        t.response(&response("c1", 487, "second", ""), Side::Pbx, is_me, now);
        assert!(hop(t.request(&ack, Side::Trunk, now)).is_some());
    }

    #[test]
    fn bye_ends_the_dialog_after_its_grace_and_idle_ones_are_forgotten() {
        let now = Instant::now();
        let limits = DialogLimits::default();
        let mut t = DialogTable::new(limits);
        answered(&mut t, "c1", now);
        answered(&mut t, "c2", now);
        let bye = request("BYE", "c1", "caller", "callee");
        assert!(hop(t.request(&bye, Side::Trunk, now)).is_some());
        // A retransmitted BYE still matches within the grace period.
        let later = now + limits.ending_for / 2;
        assert!(hop(t.request(&bye, Side::Trunk, later)).is_some());
        let after = now + limits.ending_for * 2;
        // c2 had no request at all: still known until it is idle too long;
        // c1 is gone from the table without being looked up again.
        let info = request("INFO", "c2", "caller", "callee");
        assert!(hop(t.request(&info, Side::Trunk, after)).is_some());
        assert_eq!(t.len(), 1);
        assert_eq!(t.request(&bye, Side::Trunk, after), Membership::Stray);
        let idle = after + limits.idle + Duration::from_secs(1);
        assert_eq!(t.request(&info, Side::Trunk, idle), Membership::Stray);
    }

    #[test]
    fn a_target_refresh_moves_a_contact_hop() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        answered(&mut t, "c1", now);
        // The PBX re-INVITEs with a new Contact (10.0.0.6:5090).
        let reinvite = request("INVITE", "c1", "callee", "caller");
        assert!(hop(t.request(&reinvite, Side::Pbx, now)).is_some());
        let bye = request("BYE", "c1", "caller", "callee");
        assert_eq!(
            hop(t.request(&bye, Side::Trunk, now)).as_deref(),
            Some("10.0.0.6:5090")
        );
    }

    #[test]
    fn a_notify_makes_the_dialog_of_a_pending_subscribe() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits::default());
        let subscribe = parse(
            "SUBSCRIBE sip:x@pbx SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=sub\nTo: <sip:x@pbx>\nCall-ID: s1\nCSeq: 1 SUBSCRIBE\nContact: <sip:a@198.51.100.1>\nEvent: dialog\nContent-Length: 0\n\n",
        );
        t.initial(&subscribe, Side::Trunk, now);
        let notify = request("NOTIFY", "s1", "notifier", "sub");
        assert_eq!(
            hop(t.request(&notify, Side::Pbx, now)).as_deref(),
            Some("198.51.100.1:5060")
        );
        // Not from the subscriber's own side.
        let mut t2 = DialogTable::new(DialogLimits::default());
        t2.initial(&subscribe, Side::Trunk, now);
        assert_eq!(t2.request(&notify, Side::Trunk, now), Membership::Stray);
    }

    #[test]
    fn ended_dialogs_leave_no_trace_in_the_queues() {
        let now = Instant::now();
        let limits = DialogLimits::default();
        let mut t = DialogTable::new(limits);
        // One long call first, then many short ones behind it.
        answered(&mut t, "long", now);
        for n in 0..5_000 {
            let c = format!("short-{n}");
            answered(&mut t, &c, now);
            let bye = request("BYE", &c, "caller", "callee");
            assert!(hop(t.request(&bye, Side::Trunk, now)).is_some());
        }
        let later = now + limits.ending_for * 2;
        let info = request("INFO", "long", "caller", "callee");
        assert!(hop(t.request(&info, Side::Trunk, later)).is_some());
        assert_eq!(t.len(), 1);
        assert!(
            t.dialog_order.len() <= 2 * t.len() + 1024,
            "{} queued for {} dialogs",
            t.dialog_order.len(),
            t.len()
        );
        assert!(t.pending_order.len() <= 2 * t.pending() + 1024);
    }

    #[test]
    fn a_full_table_forgets_its_oldest_dialog() {
        let now = Instant::now();
        let mut t = DialogTable::new(DialogLimits {
            max_dialogs: 2,
            max_pending: 2,
            ..DialogLimits::default()
        });
        for c in ["c1", "c2", "c3"] {
            answered(&mut t, c, now);
        }
        assert_eq!(t.len(), 2);
        assert!(t.evicted() >= 1);
        let first = request("BYE", "c1", "caller", "callee");
        assert_eq!(t.request(&first, Side::Trunk, now), Membership::Stray);
        let last = request("BYE", "c3", "caller", "callee");
        assert!(hop(t.request(&last, Side::Trunk, now)).is_some());
    }

    #[test]
    fn long_keys_are_kept_as_digests_and_still_match() {
        let long = vec![b'a'; 4000];
        let k = key(&[&long, b"tag"]);
        assert_eq!(k.len(), 33, "a long key costs 33 bytes");
        assert_eq!(k, key(&[&long, b"tag"]), "the same parts make the same key");
        assert_ne!(k, key(&[&long, b"other"]));
        let short = key(&[b"call", b"tag"]);
        assert_eq!(short, b"call\0tag\0");
    }
}
