//! The processes the chaos run owns: `clerk-broker serve` replicas and one
//! `redis-server`, started, killed, paused and restarted on their own ports.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clerk_broker::pb::{GetUserRequest, user_service_client::UserServiceClient};
use tonic::transport::Channel;

/// What went wrong starting or steering a process.
pub(crate) type ProcResult<T> = Result<T, String>;

/// A free port on the loopback interface.
pub(crate) fn free_port() -> ProcResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port())
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with kill(1).
pub(crate) fn signal(pid: u32, signal: &str) -> ProcResult<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .map_err(|e| format!("kill -{signal}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -{signal} {pid} failed"))
}

/// Resident memory of `pid` (`VmRSS`), in KiB; 0 if unknown.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One `redis-server` without persistence of its own; a restart that keeps
/// the data saves it first (`SHUTDOWN SAVE`) and loads it back.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts it on a free port, with its dump file in `dir`.
    pub(crate) fn start(dir: &Path) -> ProcResult<Self> {
        let mut redis = Self {
            child: None,
            port: free_port()?,
            dir: dir.to_owned(),
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> ProcResult<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server does not start (is it installed?): {e}"))?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.command("PING").as_deref() == Some("+PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not answer on port {}", self.port))
    }

    /// Sends one inline command; the first line of the answer.
    fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut answer = [0u8; 64];
        let read = stream.read(&mut answer).ok()?;
        let text = String::from_utf8_lossy(&answer[..read]);
        Some(text.lines().next().unwrap_or("").to_owned())
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Restarts it: with its data (saved, then loaded) or without.
    pub(crate) fn restart(&mut self, keep_data: bool) -> ProcResult<()> {
        let dump = self.dir.join("dump.rdb");
        let _ = std::fs::remove_file(&dump);
        if keep_data {
            // The server exits while answering: no answer to wait for.
            let _ = self.command("SHUTDOWN SAVE");
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
            if !dump.exists() {
                return Err("redis-server saved no dump on SHUTDOWN SAVE".into());
            }
        } else {
            self.kill();
        }
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How every replica is started.
#[derive(Clone)]
pub(crate) struct ReplicaSpec {
    /// The `clerk-broker` binary.
    pub(crate) binary: PathBuf,
    /// The fake Clerk's base URL.
    pub(crate) clerk_url: String,
    /// The key the fake accepts.
    pub(crate) key: String,
    pub(crate) redis_url: String,
    /// Extra flags (budget, cache, timeouts).
    pub(crate) flags: Vec<String>,
}

/// One `clerk-broker serve` process on fixed ports (kept across restarts).
pub(crate) struct Replica {
    child: Option<Child>,
    /// Where it serves gRPC.
    pub(crate) grpc: SocketAddr,
    http: SocketAddr,
    /// The Clerk-compatible front (on by default).
    front: SocketAddr,
    /// Where its logs go (appended to across restarts).
    log: PathBuf,
    /// Resident memory once ready after its latest start, KiB.
    pub(crate) start_rss_kib: u64,
}

impl Replica {
    /// Starts a replica on free ports and waits until it answers.
    pub(crate) async fn start(spec: &ReplicaSpec, log: PathBuf) -> ProcResult<Self> {
        let mut replica = Self {
            child: None,
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            http: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            front: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            log,
            start_rss_kib: 0,
        };
        replica.spawn(spec).await?;
        Ok(replica)
    }

    async fn spawn(&mut self, spec: &ReplicaSpec) -> ProcResult<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(&spec.binary)
            .arg("serve")
            .args(["--listen", &self.grpc.to_string()])
            .args(["--http-listen", &self.http.to_string()])
            .args(["--clerk-api-listen", &self.front.to_string()])
            .args(["--clerk-api-url", &spec.clerk_url])
            .args(["--redis-url", &spec.redis_url])
            .args(&spec.flags)
            .env("CLERK_SECRET_KEY", &spec.key)
            .env_remove("CLERK_SECRET_KEY_FILE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{} does not start: {e}", spec.binary.display()))?;
        self.child = Some(child);
        self.wait_ready().await?;
        self.start_rss_kib = self.pid().map_or(0, rss_kib);
        Ok(())
    }

    /// Waits until a `GetUser` gets an answer from the broker itself (any
    /// status but a transport failure).
    async fn wait_ready(&mut self) -> ProcResult<()> {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "the replica on {} exited ({status}): see {}",
                    self.grpc,
                    self.log.display()
                ));
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.grpc))
                .map_err(|e| e.to_string())?
                .connect()
                .await
            {
                let mut request = tonic::Request::new(GetUserRequest {
                    user_id: "user_ready".into(),
                });
                request.set_timeout(Duration::from_secs(2));
                let answer = UserServiceClient::new(channel).get_user(request).await;
                if answer.is_ok() || answer.is_err_and(|s| s.code() != tonic::Code::Unavailable) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the replica on {} did not start in 30 s",
            self.grpc
        ))
    }

    /// Its process id, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports.
    pub(crate) async fn restart(&mut self, spec: &ReplicaSpec) -> ProcResult<()> {
        self.kill();
        self.spawn(spec).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
