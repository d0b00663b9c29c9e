//! Kafka helpers for the integration tests: a Tansu broker on a free port, child
//! processes killed on drop, a producer and a whole-topic reader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{free_port, wait_port};

/// How to get the broker.
pub const INSTALL_TANSU: &str = "cargo install tansu --locked --features dynostore,libsql";

/// A child process, killed with SIGKILL when dropped (also when the test panics).
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Spawn with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.into(),
            child: Some(child),
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM and wait (bounded) for the exit; `None` if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref().map(Child::id)?;
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {} failed", self.name);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The Tansu binary, or a failure that says how to install it.
pub fn tansu_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path
        .into_iter()
        .chain(home)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Kafka tests need the Tansu broker binary (`tansu` on PATH or in ~/.cargo/bin); \
                 install it once per machine with `{INSTALL_TANSU}` (about 14 minutes)"
            )
        })
}

/// The last lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Tansu broker with in-memory storage on 127.0.0.1.
pub struct Broker {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    /// Start on a free port (retrying if the port was taken meanwhile).
    pub fn start(dir: &Path) -> Self {
        for _ in 0..3 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let proc = Proc::spawn(
                "tansu",
                Command::new(tansu_bin())
                    .current_dir(dir)
                    .args([
                        "broker",
                        "--listener-url",
                        &url,
                        "--advertised-listener-url",
                        &url,
                    ])
                    .args(["--storage-engine", "memory://tansu/"]),
                &dir.join("tansu.log"),
            );
            let mut b = Self {
                proc,
                port,
                dir: dir.to_path_buf(),
            };
            if wait_port(port) && b.proc.exited().is_none() {
                return b;
            }
            b.proc.kill9();
        }
        panic!("tansu did not start:\n{}", tail(&dir.join("tansu.log"), 20));
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Create a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Produce `(key, value)` records in order and wait until every one is acknowledged.
pub fn produce(brokers: &str, topic: &str, msgs: &[(String, Vec<u8>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer");
    for (k, v) in msgs {
        let mut rec = BaseRecord::to(topic).key(k).payload(v);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60))
        .expect("test producer flush");
}

/// Reads a whole topic from the beginning, outside any consumer group.
pub struct Reader {
    consumer: BaseConsumer,
    /// Values read so far, as JSON.
    pub values: Vec<serde_json::Value>,
}

impl Reader {
    /// Assign every partition from the beginning.
    pub fn new(brokers: &str, topic: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("test reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            values: Vec::new(),
        }
    }

    /// Read until `done` holds of everything read so far, or the deadline.
    pub fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.values) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                let v = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null);
                self.values.push(v);
            }
        }
    }
}
