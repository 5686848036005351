//! A live packet capture for the tests that turn real calls into sipp
//! tests (`callgate trace to-sipp`): `tcpdump` writing a pcap of one
//! interface, started when it says it listens, stopped once a sentinel
//! datagram the test sends is in the file (every packet before it was
//! written: `-U` writes packet by packet), so nothing of the call is lost
//! and nothing is left to timing. Installed by `test-calls/run-tests.sh`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The payload of the datagram that ends a capture.
pub const SENTINEL: &[u8] = b"callgate-test-capture-ends-here";

/// A running `tcpdump -i IFACE -w FILE FILTER`; killed on drop.
pub struct Tcpdump {
    child: Child,
    pub path: PathBuf,
}

impl Tcpdump {
    /// Starts capturing whole packets of `iface` matching `filter` (BPF)
    /// into `path`; returns once tcpdump listens (bounded), or why it
    /// could not (missing, not permitted).
    pub fn start(iface: &str, filter: &str, path: &Path) -> Result<Tcpdump, String> {
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
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Tcpdump {
                child,
                path: path.to_path_buf(),
            }),
            Ok(Err(said)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("tcpdump -i {iface} did not start: {said}"))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("tcpdump -i {iface} did not start within 10 s"))
            }
        }
    }

    /// Stops the capture once the file holds [`SENTINEL`], which `send`
    /// sends (it must match the filter); returns the capture's bytes.
    pub fn finish(mut self, send: impl Fn()) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            send();
            let file = std::fs::read(&self.path).unwrap_or_default();
            if file.windows(SENTINEL.len()).any(|w| w == SENTINEL) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the capture {} never got the sentinel datagram",
                self.path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
