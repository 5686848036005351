//! A live packet capture for the tests that turn real calls into sipp
//! tests (`callgate trace to-sipp`), by the tools testers use: `tcpdump`
//! (started when it says it listens) or `sngrep` (its `-O` pcap; started
//! once a probe it captured is in the file). Either is stopped once an end
//! marker the test sends is in the file: every packet before it was
//! written, so nothing of the call is lost and nothing is left to timing.
//! The markers are SIP OPTIONS (sngrep keeps only SIP) on a port of the
//! capture's filter. Installed by `test-calls/run-tests.sh`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Call-ID of the marker that ends a capture.
const END: &str = "callgate-test-capture-ends-here";
/// The Call-ID of the probe that shows sngrep captures.
const START: &str = "callgate-test-capture-starts-here";

/// A SIP OPTIONS datagram with the Call-ID `call_id`, as a marker.
fn marker(call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:marker@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:test@127.0.0.1>;tag=marker\r\nTo: <sip:marker@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `marker` until the capture file at `path` holds it (bounded).
fn until_captured(path: &Path, call_id: &str, send: &dyn Fn(&[u8])) {
    let m = marker(call_id);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        send(&m);
        let file = std::fs::read(path).unwrap_or_default();
        if file.windows(call_id.len()).any(|w| w == call_id.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the capture {} never got the marker {call_id}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running capture into a pcap file; killed on drop.
pub struct LiveCapture {
    child: Child,
    pub path: PathBuf,
}

impl LiveCapture {
    /// `tcpdump -i IFACE -w PATH FILTER` (BPF), whole packets, each
    /// handed over at once (`--immediate-mode`) and written at once
    /// (`-U`); returns once tcpdump listens (bounded), or why it could not
    /// (missing, not permitted).
    pub fn tcpdump(iface: &str, filter: &str, path: &Path) -> Result<LiveCapture, String> {
        let mut child = Command::new("tcpdump")
            .args(["-i", iface, "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
            .arg(path)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump: {e} (apt-get install tcpdump)"))?;
        let stderr = child.stderr.take().ok_or("tcpdump: no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                    return;
                }
                said.push_str(&line);
                said.push('\n');
            }
            let _ = tx.send(Err(said));
        });
        let failed = |mut child: Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("tcpdump -i {iface} did not start: {why}"))
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(LiveCapture {
                child,
                path: path.to_path_buf(),
            }),
            Ok(Err(said)) => failed(child, said),
            Err(_) => failed(child, "nothing said within 10 s".into()),
        }
    }

    /// `sngrep -N -q -d IFACE -O PATH FILTER`: sngrep without its screen,
    /// saving the SIP it captures; returns once a probe `send` sends (on
    /// a port of the filter) is in the file.
    pub fn sngrep(
        iface: &str,
        filter: &str,
        path: &Path,
        send: impl Fn(&[u8]),
    ) -> Result<LiveCapture, String> {
        // sngrep reads its first argument as a match expression unless
        // the words given, joined, make a BPF filter: one word each.
        let child = Command::new("sngrep")
            .args(["-N", "-q", "-d", iface, "-O"])
            .arg(path)
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sngrep: {e} (apt-get install sngrep)"))?;
        let c = LiveCapture {
            child,
            path: path.to_path_buf(),
        };
        until_captured(path, START, &send);
        Ok(c)
    }

    /// Stops the capture once the file holds the end marker, which `send`
    /// sends (on a port of the filter); returns the capture's bytes.
    pub fn finish(mut self, send: impl Fn(&[u8])) -> Vec<u8> {
        until_captured(&self.path, END, &send);
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
