//! RESP2, the Redis serialization protocol (redis.io/docs/reference/protocol-spec):
//! commands out as arrays of bulk strings, replies in — simple strings,
//! errors, integers, bulk strings and arrays. The parser is incremental and
//! bounds-checked: it says "need more" or fails, never panics.

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A malformed reply (the connection is then reset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RESP reply: {0}")]
pub struct RespError(pub &'static str);

/// Limits on what a reply may declare.
const MAX_BULK: usize = 8 * 1024 * 1024;
const MAX_ARRAY: usize = 1_000_000;
const MAX_DEPTH: usize = 8;

/// Encodes a command as an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(Some((reply, used)))`,
/// `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr::memmem::find(rest, b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError("bad integer"))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError("nested too deep"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let string = || String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(string()), next))),
        b'-' => Ok(Some((Reply::Error(string()), next))),
        b':' => Ok(Some((Reply::Integer(int(text)?), next))),
        b'$' => {
            let n = int(text)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| RespError("bad length"))?;
            if n > MAX_BULK {
                return Err(RespError("bulk string too large"));
            }
            let end = next + n;
            match buf.get(next..end + 2) {
                None => Ok(None),
                Some(b) if &b[n..] == b"\r\n" => {
                    Ok(Some((Reply::Bulk(Some(b[..n].to_vec())), end + 2)))
                }
                Some(_) => Err(RespError("bulk string not terminated")),
            }
        }
        b'*' => {
            let n = int(text)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| RespError("bad length"))?;
            if n > MAX_ARRAY {
                return Err(RespError("array too large"));
            }
            let mut items = Vec::with_capacity(n.min(64));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        _ => Err(RespError("unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_fails() {
        let mut c = Vec::new();
        command(&mut c, &[b"SET", b"k", b"v"]);
        assert_eq!(c, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
        let all = b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nz\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while let Ok(Some((r, used))) = parse(&all[at..]) {
            got.push(r);
            at += used;
        }
        assert_eq!(at, all.len());
        assert_eq!(got[2], Reply::Integer(42));
        assert_eq!(got[4], Reply::Bulk(None));
        assert_eq!(
            got[5],
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"z".to_vec()))
            ]))
        );
        // Every truncation asks for more; none panics.
        for cut in 0..all.len() {
            let _ = parse(&all[..cut]);
        }
        assert_eq!(parse(b"$3\r\nab"), Ok(None));
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":notanumber\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(&b"*1\r\n".repeat(20)).is_err());
    }
}
