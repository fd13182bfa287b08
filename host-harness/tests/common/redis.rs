//! A real `redis-server` on a free 127.0.0.1 port, for the answer-store
//! tests: nothing saved, killed when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary (Debian package `redis-server`).
const REDIS_SERVER: &str = "redis-server";

/// How long a started server may take to answer PING.
const START_WAIT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port (another port when one is taken
    /// meanwhile). Fails the test, saying what to install, when
    /// `redis-server` is missing.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra arguments (`--requirepass x`, …).
    pub fn start_with(args: &[&str]) -> RedisServer {
        for _ in 0..20 {
            let port = free_port();
            if let Some(server) = RedisServer::try_start(port, args) {
                return server;
            }
        }
        panic!("redis-server would not start on any of 20 free ports");
    }

    /// Starts a server on `port` (the port of one that was killed).
    pub fn start_on(port: u16) -> RedisServer {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(server) = RedisServer::try_start(port, &[]) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server would not start again on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A server on `port`, once it answers PING; `None` when it exits first
    /// (the port was taken).
    fn try_start(port: u16, args: &[&str]) -> Option<RedisServer> {
        let spawned = Command::new(REDIS_SERVER)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "{REDIS_SERVER} is not installed: the answer-store tests need a real Redis; \
                 install the Debian package `redis-server` (apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot start {REDIS_SERVER}: {e}"),
        };
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(child) = server.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                server.child = None;
                return None;
            }
            if ping(port) {
                return Some(server);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL ("Redis dies mid-run") and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a Redis on `port` answers PING.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server with `--requirepass` answers NOAUTH: it is up all the same.
    let mut answer = [0u8; 64];
    match stream.read(&mut answer) {
        Ok(n) => answer[..n].starts_with(b"+PONG") || answer[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
