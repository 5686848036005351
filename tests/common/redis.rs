//! A real `redis-server` on a loopback port for the tests that share state
//! through it (tests/state_redis.rs, tests/faults_store.rs,
//! tests/instances.rs): plain, over TLS with ACL users, or a Sentinel.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real redis-server on a loopback port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts redis-server and waits (bounded) for "Ready to accept
    /// connections" on its log.
    pub fn start(port: u16) -> RedisServer {
        RedisServer::start_with(port, &[])
    }

    /// [`RedisServer::start`] with more configuration directives after
    /// the usual ones (a later directive overrides an earlier one: `--port
    /// 0 --tls-port P` serves TLS only on `port`).
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::spawn(port, &[], extra, "Ready to accept connections")
    }

    /// A Sentinel on `port` watching the master `name` at `master` (quorum
    /// 1), its configuration file in `dir`; ready once it monitors it.
    pub fn sentinel(port: u16, name: &str, master: u16, dir: &std::path::Path) -> RedisServer {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!("port {port}\nbind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master} 1\n"),
        )
        .expect("write sentinel.conf");
        let conf = conf.display().to_string();
        RedisServer::spawn(port, &[&conf, "--sentinel"], &[], "+monitor master")
    }

    fn spawn(port: u16, first: &[&str], extra: &[&str], ready: &'static str) -> RedisServer {
        let mut child = Command::new("redis-server")
            .args(first)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
                "--loglevel",
                "notice",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            panic!("redis-server did not become ready on port {port}");
        }
        RedisServer { child, port }
    }

    /// Sends one raw command and returns the first reply line.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).expect("write redis");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read redis");
        line.trim_end().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
