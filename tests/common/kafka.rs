//! Kafka helpers for the integration tests: a Tansu broker on a free port, child
//! processes killed on drop, a producer and a whole-topic reader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::{free_port, wait_port};

pub const INSTALL_TANSU: &str = "cargo install tansu --locked --features dynostore,libsql";

// ---------------------------------------------------------------------------------------
// Processes.

/// A child process, killed with SIGKILL when dropped (also when the test panics).
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
}

impl Proc {
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

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("{} is not running", self.name))
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

    /// Send SIGTERM and wait (bounded) for the exit; `None` if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
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

#[derive(Clone, Copy, PartialEq)]
pub enum Storage {
    /// In memory: lost when the broker dies. Tansu 0.6.0's memory engine (dynostore)
    /// answers a Fetch only with the record batches whose *base* offset is at or after
    /// the requested one: a consumer that resumes from an offset inside a producer's
    /// batch silently loses the rest of that batch (see (k) and BENCHMARKS.md).
    Memory,
    /// `sqlite://tansu.db` in the test's temp dir: survives `kill -9`, and serves a
    /// Fetch from any offset, also inside a batch.
    Sqlite,
}

/// The storage of every test that restarts attache from a committed offset in the
/// middle of a stream: a clean stop commits the next message to read, which is
/// usually inside a producer's record batch, and the memory engine cannot resume
/// there (test (k)).
pub const RESUMABLE: Storage = Storage::Sqlite;

/// A Tansu broker on 127.0.0.1.
pub struct Broker {
    pub proc: Proc,
    pub port: u16,
    pub storage: Storage,
    pub dir: PathBuf,
    pub starts: usize,
}

impl Broker {
    pub fn start(dir: &Path, storage: Storage) -> Self {
        let mut last = String::new();
        // A free port can be taken between the probe and the bind: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut b = Self {
                proc: Self::spawn(dir, port, storage, 0),
                port,
                storage,
                dir: dir.to_path_buf(),
                starts: 1,
            };
            if wait_port(port) && b.proc.exited().is_none() {
                return b;
            }
            b.proc.kill9();
            last = tail(&dir.join("tansu-0.log"), 20);
        }
        panic!("tansu did not start on 127.0.0.1:\n{last}");
    }

    pub fn spawn(dir: &Path, port: u16, storage: Storage, n: usize) -> Proc {
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            Storage::Memory => "memory://tansu/",
            Storage::Sqlite => "sqlite://tansu.db",
        };
        Proc::spawn(
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
                .args(["--storage-engine", engine]),
            &dir.join(format!("tansu-{n}.log")),
        )
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

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

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start again on the same port and storage.
    pub fn restart(&mut self) {
        assert!(
            self.storage == Storage::Sqlite,
            "a memory broker loses its topics on restart"
        );
        self.proc = Self::spawn(&self.dir, self.port, self.storage, self.starts);
        self.starts += 1;
        assert!(
            wait_port(self.port),
            "tansu did not come back on {}",
            self.addr()
        );
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Send `rec`, waiting while the producer's queue is full, then serve callbacks.
pub fn send_retrying<C, K, P>(p: &BaseProducer<C>, mut rec: BaseRecord<'_, K, P, C::DeliveryOpaque>)
where
    C: ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
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

/// Produce `(key, value)` records in order and wait until every one is acknowledged.
pub fn produce(brokers: &str, topic: &str, msgs: &[(String, Vec<u8>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer");
    for (k, v) in msgs {
        send_retrying(&p, BaseRecord::to(topic).key(k).payload(v));
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
