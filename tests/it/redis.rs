//! Redis for the tests: `redis-server` on a free loopback port, no
//! persistence. `scripts/test.sh` installs it when missing.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// A `redis-server` this test owns; killed when dropped.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

fn spawn(port: u16, watch_pid: Option<u32>) -> Child {
    let args = format!("--port {port} --bind 127.0.0.1 --save '' --appendonly no");
    // The shared instance outlives no test process: a watchdog stops it.
    let script = match watch_pid {
        Some(pid) => format!(
            "redis-server {args} & r=$!; while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill $r"
        ),
        None => format!("exec redis-server {args}"),
    };
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    wait_ready(port);
    child
}

/// Waits until `PING` is answered on `port`.
fn wait_ready(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut answer = [0u8; 5];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG"
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "redis-server did not start on port {port}: is it installed? \
         (scripts/test.sh installs it: apt-get install -y redis-server)"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl RedisServer {
    /// A new server on a free port, ready.
    pub(crate) fn start() -> Self {
        let port = free_port();
        Self {
            child: Some(spawn(port, None)),
            port,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (its data is lost).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, None));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The URL of one Redis shared by every test of this process (each broker
/// uses its own key prefix); it stops when the process ends.
pub(crate) fn shared_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = free_port();
        // Detached: the watchdog in `spawn` ends it with this process.
        std::mem::forget(spawn(port, Some(std::process::id())));
        format!("redis://127.0.0.1:{port}")
    })
    .clone()
}
