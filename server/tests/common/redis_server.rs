//! A `redis-server` of a test's own (Debian's; `scripts/cluster-deps.sh`
//! installs it), on a free port, with or without persistence, that a test
//! can kill, restart on the same port, pause and resume. Killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    /// Where an append-only file is kept, when persistent.
    dir: Option<PathBuf>,
    /// Its `appendfsync`.
    appendfsync: &'static str,
}

impl RedisServer {
    /// Without persistence: a restart loses everything.
    pub fn start() -> RedisServer {
        Self::start_on(free_port(), None, "")
    }

    /// Without persistence, on `port`.
    pub fn start_on_port(port: u16) -> RedisServer {
        Self::start_on(port, None, "")
    }

    /// With an append-only file fsynced on every write: a restart keeps
    /// everything.
    pub fn start_persistent() -> RedisServer {
        Self::start_with_aof("always")
    }

    /// With an append-only file and this `appendfsync` (`always`,
    /// `everysec`, `no`).
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_with_aof(appendfsync: &'static str) -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_on(port, Some(dir), appendfsync)
    }

    fn start_on(port: u16, dir: Option<PathBuf>, appendfsync: &'static str) -> RedisServer {
        let mut cmd = redis_server(port);
        match &dir {
            Some(d) => cmd.args([
                "--dir",
                d.to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
            ]),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/cluster-deps.sh installs it)");
        // Up once PING answers PONG: Redis accepts connections while it
        // still loads its append-only file, and answers `-LOADING` then.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_pong(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child: Some(child),
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            dir,
            appendfsync,
        }
    }

    /// `SIGKILL`: gone at once, no last write.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (with the same files, if persistent).
    pub fn restart(&mut self) {
        self.kill();
        let mut again = Self::start_on(self.port, self.dir.clone(), self.appendfsync);
        self.child = again.child.take();
        again.dir = None; // ours, not its to remove
    }

    /// Where a persistent server keeps its files.
    #[allow(dead_code)] // not every test binary uses it
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// `SIGSTOP` (`true`) or `SIGCONT` (`false`).
    pub fn pause(&self, stop: bool) {
        let pid = self.child.as_ref().expect("running").id();
        let signal = if stop { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A paused server would not die of SIGKILL until continued.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Whether the server on `port` answers `PING` with `PONG` (not
/// `-LOADING`, not silence).
fn answers_pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 64];
    matches!(s.read(&mut answer), Ok(n) if answer[..n].starts_with(b"+PONG"))
}

/// `redis-server` on loopback port `port`, without snapshots.
fn redis_server(port: u16) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ]);
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Cluster of `n` masters (no replicas) on free ports, each
/// slot range on one node; killed on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "ringcast-rcluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for &port in &ports {
            let child = redis_server(port)
                .args(["--appendonly", "no"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &free_port().to_string(),
                ])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--dir", dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/cluster-deps.sh installs it)");
            nodes.push(child);
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, ports, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.ports.iter().all(|&p| {
            cluster
                .cli(p, &["cluster", "info"])
                .contains("cluster_state:ok")
        }) {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The process id of master `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].id()
    }

    /// `--redis` for a node: every master as a seed.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis+cluster://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// What `redis-cli -p PORT ARGS…` prints.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
