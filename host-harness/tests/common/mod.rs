//! Test support: the compiled component shared by a test binary, and a tiny
//! HTTP/1.1 server on 127.0.0.1 that the tests start and that stops when dropped.

#![allow(dead_code)]

pub mod redis;
pub mod serving;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use host_harness::runtime::Runtime;

/// The bundled component, compiled once per test binary.
pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::bundled().expect("compile the bundled component"))
        .clone()
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Action {
    /// Answer at once.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Say nothing for this long, then close.
    Stall(Duration),
    /// Send the head and then the body one byte per interval.
    Drip { body: Vec<u8>, interval: Duration },
    /// Wait, then do the inner action (latency).
    Delay(Duration, Box<Action>),
    /// Close the connection without a response.
    Close,
    /// Write exactly these bytes (status line, headers and body, nothing
    /// added), then end the connection as `then` says.
    Raw { bytes: Vec<u8>, then: Ending },
    /// Write these bytes one per interval (head included), then close.
    DripRaw { bytes: Vec<u8>, interval: Duration },
    /// A 200 head (with `headers`), then `chunk` `count` times in chunked
    /// encoding, without buffering it all; stops when the peer goes away.
    Chunked {
        headers: Vec<(String, String)>,
        chunk: Vec<u8>,
        count: usize,
    },
}

/// How a [`Action::Raw`] answer ends.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// An orderly close (FIN).
    Close,
    /// A reset (RST: `SO_LINGER` 0, then close).
    Reset,
    /// Keep the connection open and silent this long, then close.
    Hold(Duration),
}

impl Action {
    /// A 30x pointing at `location`.
    pub fn redirect(status: u16, location: &str) -> Action {
        Action::Respond {
            status,
            headers: vec![("location".into(), location.into())],
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, body: &str) -> Action {
        Action::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Seen) -> Action + Send + Sync;

/// A loopback HTTP server.
pub struct Server {
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let max_active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            let (active, max_active) = (active.clone(), max_active.clone());
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (seen, handler, stop) = (seen.clone(), handler.clone(), stop.clone());
                    let (active, max_active) = (active.clone(), max_active.clone());
                    std::thread::spawn(move || {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        max_active.fetch_max(now, Ordering::SeqCst);
                        serve(conn, &seen, &*handler, &stop);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Server {
            addr,
            seen,
            active,
            max_active,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far (with or without a request on them).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Most connections open at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_active.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let request = Seen {
        method: first.next().unwrap_or_default().to_owned(),
        target: first.next().unwrap_or_default().to_owned(),
        headers: lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            })
            .collect(),
    };
    seen.lock().unwrap().push(request.clone());
    match act(&mut conn, handler(&request), stop) {
        Ending::Reset => reset(conn),
        _ => {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Closes with a reset instead of a FIN: `SO_LINGER` with a zero timeout.
/// (std's `TcpStream::set_linger` is unstable, so the libc call is made directly.)
#[cfg(target_os = "linux")]
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    unsafe extern "C" {
        fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            value: *const std::ffi::c_void,
            len: u32,
        ) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor, a pointer to a live `struct linger` and its size.
    let rc = unsafe {
        setsockopt(
            conn.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<Linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
    drop(conn);
}

#[cfg(not(target_os = "linux"))]
fn reset(conn: TcpStream) {
    let _ = conn.shutdown(Shutdown::Both);
}

fn hold(d: Duration, stop: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Does `action`; says how the connection should end.
fn act(conn: &mut TcpStream, action: Action, stop: &AtomicBool) -> Ending {
    match action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = conn.write_all(out.as_bytes());
            let _ = conn.write_all(&body);
        }
        Action::Stall(d) => hold(d, stop),
        Action::Drip { body, interval } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            for b in body {
                if stop.load(Ordering::SeqCst) || conn.write_all(&[b]).is_err() {
                    break;
                }
                let _ = conn.flush();
                std::thread::sleep(interval);
            }
        }
        Action::Delay(d, inner) => {
            std::thread::sleep(d);
            return act(conn, *inner, stop);
        }
        Action::Close => {}
        Action::Raw { bytes, then } => {
            let _ = conn.write_all(&bytes);
            let _ = conn.flush();
            if let Ending::Hold(d) = then {
                hold(d, stop);
            }
            return then;
        }
        Action::DripRaw { bytes, interval } => {
            for b in bytes {
                if stop.load(Ordering::SeqCst) || conn.write_all(&[b]).is_err() {
                    break;
                }
                let _ = conn.flush();
                std::thread::sleep(interval);
            }
        }
        Action::Chunked {
            headers,
            chunk,
            count,
        } => {
            let mut head = String::from(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n",
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            if conn.write_all(head.as_bytes()).is_err() {
                return Ending::Close;
            }
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk,
                b"\r\n".to_vec(),
            ]
            .concat();
            for _ in 0..count {
                if stop.load(Ordering::SeqCst) || conn.write_all(&framed).is_err() {
                    return Ending::Close;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n");
        }
    }
    Ending::Close
}
