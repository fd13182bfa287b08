//! `tip-enrich serve` as a subprocess, and a tiny HTTP/1.1 client for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `tip-enrich serve --listen 127.0.0.1:0`, killed on drop; its
/// stderr is collected.
pub struct Serving {
    child: Child,
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    /// Starts serve with `args` after `serve --listen 127.0.0.1:0`, no
    /// `TIP_API_KEY` of the test's own, and `env` set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Serving {
        Serving::spawn("serve", args, env)
    }

    /// `tip-enrich gate --listen 127.0.0.1:0` with `args`, as [`Serving::start`].
    pub fn start_gate(args: &[&str], env: &[(&str, &str)]) -> Serving {
        Serving::spawn("gate", args, env)
    }

    /// The process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(subcommand: &str, args: &[&str], env: &[(&str, &str)]) -> Serving {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
        cmd.env_remove("TIP_API_KEY")
            .env("TIP_ENRICH_CACHE", "off")
            .args([subcommand, "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                collected.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        // Compiling the component can take a while on a busy machine.
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{subcommand} did not start: {}", stderr.lock().unwrap()));
        Serving {
            child,
            addr,
            stderr,
        }
    }

    /// Everything serve wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One request on its own connection; see [`request`].
    pub fn request(&self, method: &str, path: &str, body: &str) -> Answer {
        request(&self.addr, method, path, body)
    }

    /// A GET whose answer must be JSON: (status, body).
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let a = self.request("GET", path, "");
        let v = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.body));
        (a.status, v)
    }
}

/// An HTTP answer as read off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names, trimmed values.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
    /// Head and body as received.
    pub raw: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to `addr` on its own connection (`connection: close`).
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> Answer {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {raw}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {raw}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
        raw,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
