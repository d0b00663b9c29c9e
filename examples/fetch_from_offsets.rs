//! A bare rdkafka check of a broker's Fetch answers, without attaché:
//! `cargo run --example fetch_from_offsets -- BROKERS TOPIC N [PROPS]`.
//!
//! Produces N small messages (keys `k0`..`k100`, value = the message's index) to TOPIC
//! the way the Kafka tests do (`linger.ms=5`, 20 messages every 20 ms), records where
//! each one landed, then, for every partition and every offset `o` in it, assigns a
//! fresh position at `o` (what a consumer does after a restart from a committed
//! offset) and reads what the broker returns up to the end. It prints, per start
//! offset, the first offset delivered, offsets skipped and offsets delivered twice,
//! and exits 1 if any start offset was not delivered first or anything was skipped.
//! PROPS: extra consumer properties `k=v,k=v` (e.g. `fetch.wait.max.ms=10`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

struct Landed(Mutex<HashMap<usize, (i32, i64)>>);
impl ClientContext for Landed {}
impl ProducerContext for Landed {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, i: Box<usize>) {
        if let Ok(m) = r {
            let mut at = self.0.lock().unwrap_or_else(|p| p.into_inner());
            at.insert(*i, (m.partition(), m.offset()));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (brokers, topic, n, props) = match &args[..] {
        [b, t, n] => (b, t, n, String::new()),
        [b, t, n, p] => (b, t, n, p.clone()),
        _ => {
            eprintln!("usage: fetch_from_offsets BROKERS TOPIC N [k=v,k=v]");
            std::process::exit(2);
        }
    };
    let n: usize = n.parse().unwrap_or(2000);
    let p: BaseProducer<Landed> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create_with_context(Landed(Mutex::new(HashMap::new())))
        .expect("producer");
    for i in 0..n {
        let (key, value) = (format!("k{}", i % 101), i.to_string());
        let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i))
            .key(&key)
            .payload(&value);
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
        if (i + 1) % 20 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let landed = p.context().0.lock().expect("lock").clone();
    // partition -> offset -> index
    let mut log: BTreeMap<i32, BTreeMap<i64, usize>> = BTreeMap::new();
    for (i, (part, off)) in &landed {
        log.entry(*part).or_default().insert(*off, *i);
    }
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", format!("fetch-check-{}", std::process::id()))
        .set("enable.auto.commit", "false");
    for kv in props.split(',').filter(|s| !s.is_empty()) {
        if let Some((k, v)) = kv.split_once('=') {
            cc.set(k, v);
        }
    }
    let c: BaseConsumer = cc.create().expect("consumer");
    let mut bad = 0usize;
    for (part, offs) in &log {
        let end = offs.keys().last().copied().unwrap_or(-1) + 1;
        for &start in offs.keys() {
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition_offset(topic, *part, Offset::Offset(start));
            c.assign(&tpl).expect("assign");
            let mut got: Vec<(i64, usize)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.last().is_none_or(|(o, _)| *o + 1 < end) && Instant::now() < deadline {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let idx = m
                        .payload()
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(usize::MAX);
                    got.push((m.offset(), idx));
                }
            }
            let first = got.first().map(|g| g.0);
            let mut seen = std::collections::BTreeSet::new();
            let twice: Vec<i64> = got
                .iter()
                .filter(|(o, _)| !seen.insert(*o))
                .map(|g| g.0)
                .collect();
            let skipped: Vec<i64> = (start..end).filter(|o| !seen.contains(o)).collect();
            let wrong: Vec<i64> = got
                .iter()
                .filter(|(o, i)| offs.get(o) != Some(i))
                .map(|g| g.0)
                .collect();
            if first != Some(start) || !skipped.is_empty() || !wrong.is_empty() {
                bad += 1;
                println!(
                    "partition {part} fetch from {start}: first delivered {first:?}, skipped {:?}, twice {:?}, wrong payload at {:?}",
                    &skipped[..skipped.len().min(10)],
                    &twice[..twice.len().min(10)],
                    &wrong[..wrong.len().min(10)]
                );
            }
        }
    }
    let total: usize = log.values().map(|o| o.len()).sum();
    println!("{total} start offsets checked, {bad} bad");
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
