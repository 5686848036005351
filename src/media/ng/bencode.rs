//! Bencode, the serialisation of the ng protocol's dictionaries.
//!
//! The format is BitTorrent's (BEP 3, <https://www.bittorrent.org/beps/bep_0003.html>):
//! a byte string is `<length>:<bytes>`, an integer `i<decimal>e`, a list
//! `l<values>e` and a dictionary `d<key><value>...e` with byte-string keys.
//! rtpengine's ng protocol (`docs/ng_control_protocol.md`) carries one
//! dictionary per message and notes that it does *not* honour the BEP 3 rule
//! that keys appear in lexicographic order, and Kamailio's `rtpengine` module
//! sends `command` after the other keys. So [`decode`] accepts keys in any order
//! and keeps them in arrival order; [`Value::encode`] writes them sorted, as
//! BEP 3 asks.
//!
//! The decoder never panics and never reads past its input: every access is
//! bounds-checked, nesting is limited by [`Limits::max_depth`] (so recursion is
//! bounded), the input size by [`Limits::max_bytes`] and the number of values
//! by [`Limits::max_items`]. Integers are strict (`i0e`, no leading zeros, no
//! `-0`, must fit an `i64`), as are string lengths (no leading zeros). Byte
//! strings are not required to be UTF-8 — an SDP body is bytes — and are
//! returned as zero-copy slices of the input [`Bytes`]. A key appearing twice
//! in one dictionary is an error rather than a guess at which one counts.

use std::io::Write as _;

use bytes::Bytes;

/// Size bounds for [`decode_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input accepted, in bytes (a UDP datagram carries at most 65,507).
    pub max_bytes: usize,
    /// Deepest nesting of lists and dictionaries; the top-level dictionary is
    /// level 1.
    pub max_depth: usize,
    /// Most values (strings, integers, lists, dictionaries, keys excluded) in
    /// one document.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 65_535,
            max_depth: 32,
            max_items: 8_192,
        }
    }
}

/// Why a byte sequence is not one bencoded value. Offsets are 0-based byte
/// positions in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input exceeds {0} bytes")]
    TooLarge(usize),
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("more than {0} values")]
    TooManyItems(usize),
    /// The input ends inside a value; `0` is the input length.
    #[error("input ends inside a value (after {0} bytes)")]
    Truncated(usize),
    #[error("unexpected byte 0x{byte:02x} at offset {offset}")]
    UnexpectedByte { offset: usize, byte: u8 },
    /// BEP 3: `i<decimal>e`, no leading zeros, no `-0`.
    #[error("malformed integer at offset {0}")]
    BadInteger(usize),
    #[error("integer out of range at offset {0}")]
    IntegerOverflow(usize),
    /// BEP 3: `<decimal length>:`, no leading zeros.
    #[error("malformed string length at offset {0}")]
    BadLength(usize),
    #[error("dictionary key at offset {0} is not a byte string")]
    NonStringKey(usize),
    #[error("duplicate dictionary key at offset {0}")]
    DuplicateKey(usize),
    /// [`decode`] wants exactly one value; more bytes follow it.
    #[error("trailing data at offset {0}")]
    TrailingData(usize),
}

/// One bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A byte string; not necessarily UTF-8.
    Bytes(Bytes),
    Int(i64),
    List(Vec<Value>),
    Dict(Dict),
}

/// A dictionary: byte-string keys in insertion (or arrival) order, each at
/// most once. Lookups are linear: ng dictionaries hold a handful of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dict {
    entries: Vec<(Bytes, Value)>,
}

impl Dict {
    pub fn new() -> Dict {
        Dict::default()
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an earlier value in place.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Entries in insertion (or arrival) order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut sorted: Vec<&(Bytes, Value)> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(b'd');
        for (k, v) in sorted {
            encode_bytes(k, out);
            v.encode(out);
        }
        out.push(b'e');
    }
}

impl Value {
    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, if this is a byte string and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Appends the canonical encoding (BEP 3; dictionary keys sorted as raw
    /// byte strings) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => encode_bytes(b, out),
            Value::Int(i) => {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "i{i}e");
            }
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => d.encode(out),
        }
    }

    /// The canonical encoding as a new buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    let _ = write!(out, "{}:", b.len());
    out.extend_from_slice(b);
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(Bytes::from(s))
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(Bytes::from(b))
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Value {
        Value::Bytes(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// Counters above `i64::MAX` saturate: bencode integers are signed 64-bit in
/// every ng implementation.
impl From<u64> for Value {
    fn from(i: u64) -> Value {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<u16> for Value {
    fn from(i: u16) -> Value {
        Value::Int(i64::from(i))
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Value {
        Value::List(l)
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Value {
        Value::Dict(d)
    }
}

/// Decodes exactly one value filling `input`, under [`Limits::default`].
pub fn decode(input: &Bytes) -> Result<Value, DecodeError> {
    decode_with(input, &Limits::default())
}

/// Decodes exactly one value filling `input`.
pub fn decode_with(input: &Bytes, limits: &Limits) -> Result<Value, DecodeError> {
    let (value, end) = decode_prefix(input, limits)?;
    if end != input.len() {
        return Err(DecodeError::TrailingData(end));
    }
    Ok(value)
}

/// Decodes the value at the start of `input` and returns it with the offset
/// just past it; what follows is left to the caller.
pub fn decode_prefix(input: &Bytes, limits: &Limits) -> Result<(Value, usize), DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge(limits.max_bytes));
    }
    let mut p = Parser {
        input,
        pos: 0,
        items: 0,
        limits,
    };
    let value = p.value(0)?;
    Ok((value, p.pos))
}

struct Parser<'a> {
    input: &'a Bytes,
    pos: usize,
    items: usize,
    limits: &'a Limits,
}

impl Parser<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated(self.input.len()))
    }

    /// One value; `depth` is the number of containers around it.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(DecodeError::TooManyItems(self.limits.max_items));
        }
        match self.peek()? {
            b'i' => self.integer().map(Value::Int),
            b'0'..=b'9' => self.string().map(Value::Bytes),
            b'l' => {
                self.enter(depth)?;
                let mut items = Vec::new();
                loop {
                    if self.peek()? == b'e' {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            b'd' => {
                self.enter(depth)?;
                self.dict(depth).map(Value::Dict)
            }
            byte => Err(DecodeError::UnexpectedByte {
                offset: self.pos,
                byte,
            }),
        }
    }

    /// Steps over a container's opening byte, enforcing the depth limit.
    fn enter(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        self.pos += 1;
        Ok(())
    }

    fn dict(&mut self, depth: usize) -> Result<Dict, DecodeError> {
        let mut entries = Vec::new();
        let mut key_offsets = Vec::new();
        loop {
            let c = self.peek()?;
            if c == b'e' {
                self.pos += 1;
                break;
            }
            if !c.is_ascii_digit() {
                return Err(DecodeError::NonStringKey(self.pos));
            }
            key_offsets.push(self.pos);
            let key = self.string()?;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        if entries.len() > 1 {
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by(|&a, &b| entries[a].0.cmp(&entries[b].0).then(a.cmp(&b)));
            for pair in order.windows(2) {
                if let [a, b] = *pair {
                    if entries[a].0 == entries[b].0 {
                        return Err(DecodeError::DuplicateKey(key_offsets[b]));
                    }
                }
            }
        }
        Ok(Dict { entries })
    }

    fn integer(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.peek()?.is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.input[digits_start..self.pos];
        if self.peek()? != b'e'
            || digits.is_empty()
            || (digits.len() > 1 && digits[0] == b'0')
            || (negative && digits == b"0")
        {
            return Err(DecodeError::BadInteger(start));
        }
        self.pos += 1; // 'e'
        let mut v: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            // Accumulating negative values reaches i64::MIN.
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if negative {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                })
                .ok_or(DecodeError::IntegerOverflow(start))?;
        }
        Ok(v)
    }

    /// A byte string; the caller has seen a digit at `pos`.
    fn string(&mut self) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        while self.peek()?.is_ascii_digit() {
            self.pos += 1;
        }
        let digits = &self.input[start..self.pos];
        if self.peek()? != b':' || (digits.len() > 1 && digits[0] == b'0') {
            return Err(DecodeError::BadLength(start));
        }
        let mut len: usize = 0;
        for &d in digits {
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add(usize::from(d - b'0')))
                .ok_or(DecodeError::BadLength(start))?;
        }
        self.pos += 1; // ':'
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(DecodeError::Truncated(self.input.len()))?;
        let s = self.input.slice(self.pos..end);
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Result<Value, DecodeError> {
        decode(&Bytes::copy_from_slice(s))
    }

    fn b(s: &'static str) -> Value {
        Value::from(s)
    }

    #[test]
    fn scalars() {
        assert_eq!(dec(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(dec(b"i42e"), Ok(Value::Int(42)));
        assert_eq!(dec(b"i-42e"), Ok(Value::Int(-42)));
        assert_eq!(dec(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(dec(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(dec(b"0:"), Ok(b("")));
        assert_eq!(dec(b"4:spam"), Ok(b("spam")));
        assert_eq!(dec(b"le"), Ok(Value::List(vec![])));
        assert_eq!(dec(b"de"), Ok(Value::Dict(Dict::new())));
    }

    #[test]
    fn byte_strings_need_not_be_utf8() {
        let v = dec(b"3:\xff\x00\xfe").unwrap();
        assert_eq!(v.as_bytes().unwrap().as_ref(), b"\xff\x00\xfe");
        assert_eq!(v.as_str(), None);
        // Spaces, colons and 'e' inside a string are data.
        assert_eq!(dec(b"7:a e:i1e").unwrap().as_str(), Some("a e:i1e"));
    }

    #[test]
    fn strings_are_zero_copy_slices() {
        let input = Bytes::from_static(b"d3:sdp4:v=0\re");
        let v = decode(&input).unwrap();
        let sdp = v
            .as_dict()
            .unwrap()
            .get(b"sdp")
            .unwrap()
            .as_bytes()
            .unwrap();
        assert_eq!(sdp.as_ref(), b"v=0\r");
        let base = input.as_ptr() as usize;
        assert_eq!(sdp.as_ptr() as usize - base, 8);
    }

    #[test]
    fn malformed_integers() {
        for (input, err) in [
            (&b"ie"[..], DecodeError::BadInteger(0)),
            (b"i-e", DecodeError::BadInteger(0)),
            (b"i-0e", DecodeError::BadInteger(0)),
            (b"i03e", DecodeError::BadInteger(0)),
            (b"i00e", DecodeError::BadInteger(0)),
            (b"i1x", DecodeError::BadInteger(0)),
            (b"i+1e", DecodeError::BadInteger(0)),
            (b"i 1e", DecodeError::BadInteger(0)),
            (b"i9223372036854775808e", DecodeError::IntegerOverflow(0)),
            (b"i-9223372036854775809e", DecodeError::IntegerOverflow(0)),
            (
                b"i99999999999999999999999999999999e",
                DecodeError::IntegerOverflow(0),
            ),
        ] {
            assert_eq!(dec(input), Err(err), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_strings() {
        assert_eq!(dec(b"01:a"), Err(DecodeError::BadLength(0)));
        assert_eq!(dec(b"4x"), Err(DecodeError::BadLength(0)));
        assert_eq!(dec(b"5:spam"), Err(DecodeError::Truncated(6)));
        assert_eq!(
            dec(b"99999999999999999999999999:x"),
            Err(DecodeError::BadLength(0))
        );
        assert_eq!(
            dec(b"18446744073709551615:x"),
            Err(DecodeError::Truncated(22))
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            dec(b"x"),
            Err(DecodeError::UnexpectedByte {
                offset: 0,
                byte: b'x'
            })
        );
        assert_eq!(
            dec(b"e"),
            Err(DecodeError::UnexpectedByte {
                offset: 0,
                byte: b'e'
            })
        );
        assert_eq!(dec(b""), Err(DecodeError::Truncated(0)));
        assert_eq!(dec(b"di1e1:ae"), Err(DecodeError::NonStringKey(1)));
        assert_eq!(dec(b"dl1:ae1:ae"), Err(DecodeError::NonStringKey(1)));
        assert_eq!(dec(b"d1:a"), Err(DecodeError::Truncated(4)));
        assert_eq!(dec(b"i1ei2e"), Err(DecodeError::TrailingData(3)));
        assert_eq!(dec(b"4:spam "), Err(DecodeError::TrailingData(6)));
        assert_eq!(
            dec(b"d1:ai1e1:bi2e1:ai3ee"),
            Err(DecodeError::DuplicateKey(13))
        );
    }

    #[test]
    fn prefix_decoding_reports_where_the_value_ends() {
        let input = Bytes::from_static(b"d1:ai1ee\r\n");
        let (v, end) = decode_prefix(&input, &Limits::default()).unwrap();
        assert_eq!(end, 8);
        assert_eq!(v.as_dict().unwrap().get(b"a"), Some(&Value::Int(1)));
    }

    #[test]
    fn unsorted_keys_are_accepted_and_kept_in_arrival_order() {
        let v = dec(b"d7:command5:offer7:call-id3:abc8:from-tag2:t1e").unwrap();
        let keys: Vec<&[u8]> = v.as_dict().unwrap().iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"command"[..], b"call-id", b"from-tag"]);
        // ... and written back sorted.
        assert_eq!(
            v.to_vec(),
            b"d7:call-id3:abc7:command5:offer8:from-tag2:t1e"
        );
    }

    #[test]
    fn encoder_sorts_keys_as_raw_bytes() {
        let mut d = Dict::new();
        d.insert("result", "ok");
        d.insert("sdp", Value::from(b"v=0\r\n".to_vec()));
        d.insert("RTP", Value::Int(1)); // uppercase sorts before lowercase
        d.insert("a", Value::List(vec![b("x"), Value::Int(-3)]));
        d.insert("", Value::Dict(Dict::new()));
        assert_eq!(
            Value::Dict(d).to_vec(),
            b"d0:de3:RTPi1e1:al1:xi-3ee6:result2:ok3:sdp5:v=0\r\ne"
        );
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut d = Dict::new();
        d.insert("a", Value::Int(1));
        d.insert("b", Value::Int(2));
        d.insert("a", Value::Int(3));
        assert_eq!(d.len(), 2);
        assert_eq!(d.get(b"a"), Some(&Value::Int(3)));
        assert_eq!(d.iter().next().map(|(k, _)| k), Some(&b"a"[..]));
    }

    #[test]
    fn from_conversions() {
        assert_eq!(Value::from(u64::MAX), Value::Int(i64::MAX));
        assert_eq!(Value::from(7u16), Value::Int(7));
        assert_eq!(Value::from(7u32), Value::Int(7));
        assert_eq!(Value::from(String::from("x")), b("x"));
        assert_eq!(Value::from(&String::from("x")), b("x"));
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![b'l'; depth];
        v.extend(std::iter::repeat_n(b'e', depth));
        v
    }

    #[test]
    fn depth_limit() {
        assert!(dec(&nested(32)).is_ok());
        assert_eq!(dec(&nested(33)), Err(DecodeError::TooDeep(32)));
        // Deep enough to overflow the stack of an unbounded recursive parser.
        assert_eq!(dec(&nested(32_000)), Err(DecodeError::TooDeep(32)));
        let mut d = b"d1:a".repeat(40);
        d.extend(b"i1e");
        d.extend(b"e".repeat(40));
        assert_eq!(dec(&d), Err(DecodeError::TooDeep(32)));
        let tight = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        assert!(decode_with(&Bytes::from_static(b"d1:ai1ee"), &tight).is_ok());
        assert_eq!(
            decode_with(&Bytes::from_static(b"d1:alee"), &tight),
            Err(DecodeError::TooDeep(1))
        );
    }

    #[test]
    fn size_and_item_limits() {
        let big = Bytes::from(vec![b'0'; 65_536]);
        assert_eq!(decode(&big), Err(DecodeError::TooLarge(65_535)));
        let mut many = b"l".to_vec();
        many.extend(b"i1e".repeat(8_191));
        many.push(b'e');
        assert!(dec(&many).is_ok()); // the list + 8,191 integers
        let mut too_many = b"l".to_vec();
        too_many.extend(b"i1e".repeat(8_192));
        too_many.push(b'e');
        assert_eq!(dec(&too_many), Err(DecodeError::TooManyItems(8_192)));
    }

    /// Realistic documents: a Kamailio offer, an rtpengine query reply.
    fn corpus() -> Vec<Vec<u8>> {
        let sdp = "v=0\r\no=- 1545997027 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        vec![
            format!(
                "d5:flagsl13:trust-addresse7:replacel6:origin18:session-connectione3:ICE6:remove13:received-froml3:IP410:192.0.2.10e3:sdp{}:{sdp}7:call-id24:a84b4c76e66710@pc33.test8:from-tag10:19283017747:command5:offere",
                sdp.len()
            )
            .into_bytes(),
            b"d7:createdi1402064111e11:last signali1402064116e4:tagsd10:cs6kn1rlocd3:tag10:cs6kn1rloc6:mediasld5:indexi1e4:type5:audio7:streamsld10:local porti30018e5:statsd7:packetsi343e5:bytesi56950e6:errorsi0eeeeeeee6:totalsd3:RTPd7:packetsi705e5:bytesi100287e6:errorsi0ee4:RTCPd7:packetsi22e5:bytesi2244e6:errorsi0eee6:result2:oke".to_vec(),
            b"li-1ei0e0:3:\x00\xff e".to_vec(),
        ]
    }

    #[test]
    fn corpus_round_trips_through_the_canonical_form() {
        for doc in corpus() {
            let v = dec(&doc).unwrap();
            let canonical = v.to_vec();
            let again = dec(&canonical).unwrap();
            assert_eq!(again.to_vec(), canonical);
            assert_eq!(canonical.len(), doc.len());
        }
    }

    #[test]
    fn every_proper_prefix_is_truncated() {
        for doc in corpus() {
            for end in 0..doc.len() {
                match dec(&doc[..end]) {
                    Err(DecodeError::Truncated(n)) => assert_eq!(n, end),
                    other => panic!("prefix {end}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0xbe4c);
        let alphabet = b"0123456789:ilde-";
        let mut ok = 0;
        for doc in corpus() {
            for _ in 0..5_000 {
                let mut m = doc.clone();
                for _ in 0..rng.usize(1..4) {
                    if m.is_empty() {
                        break;
                    }
                    let i = rng.usize(..m.len());
                    match rng.u8(..4) {
                        0 => m[i] = alphabet[rng.usize(..alphabet.len())],
                        1 => m[i] = rng.u8(..),
                        2 => {
                            m.remove(i);
                        }
                        _ => m.insert(i, alphabet[rng.usize(..alphabet.len())]),
                    }
                }
                if let Ok(v) = dec(&m) {
                    ok += 1;
                    // Whatever decodes re-encodes to something that decodes
                    // to the same canonical form.
                    let c = v.to_vec();
                    assert_eq!(dec(&c).unwrap().to_vec(), c);
                }
            }
        }
        // Some mutations keep the document valid (a digit inside a string).
        assert!(ok > 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let v: Vec<u8> = (0..len)
                .map(|_| b"0123456789:ilde-x"[rng.usize(..17)])
                .collect();
            let _ = dec(&v);
        }
    }
}
