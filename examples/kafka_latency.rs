//! Ingest-to-alert latency at a steady rate: produces posts from a JSON-lines file to
//! TOPIC at RATE posts/s for SECONDS, reads ALERTS_TOPIC, and reports p50/p90/p99 of
//! (alert message timestamp − post send time), matched by post id:
//! `cargo run --release --example kafka_latency -- BROKERS TOPIC ALERTS_TOPIC FILE RATE SECONDS`.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, alerts, file, rate, secs] = &a[..] else {
        eprintln!("usage: kafka_latency BROKERS TOPIC ALERTS_TOPIC FILE RATE SECONDS");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RATE");
    let secs: f64 = secs.parse().expect("SECONDS");
    let posts: Vec<(String, Vec<u8>)> =
        std::io::BufReader::new(std::fs::File::open(file).expect("file"))
            .split(b'\n')
            .filter_map(|l| l.ok())
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_slice(&l).ok()?;
                Some((v["id"].as_str()?.to_string(), l))
            })
            .collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("latency-{}", std::process::id()))
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    consumer.subscribe(&[alerts]).expect("subscribe");
    // Let the consumer join before producing.
    let t = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0
        && t.elapsed() < Duration::from_secs(30)
    {
        consumer.poll(Duration::from_millis(100));
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let n = (rate * secs) as usize;
    let mut sent: HashMap<String, i64> = HashMap::with_capacity(n);
    let mut lat: Vec<i64> = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    let collect = |consumer: &BaseConsumer,
                   sent: &HashMap<String, i64>,
                   lat: &mut Vec<i64>,
                   wait: Duration| {
        while let Some(Ok(m)) = consumer.poll(wait) {
            let ts = m.timestamp().to_millis().unwrap_or_else(now_ms);
            if let Some(Ok(v)) = m.payload().map(serde_json::from_slice::<serde_json::Value>) {
                if let Some(t0) = v["post"]["id"].as_str().and_then(|id| sent.get(id)) {
                    lat.push(ts - t0);
                }
            }
        }
    };
    while i < n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            collect(&consumer, &sent, &mut lat, Duration::ZERO);
            producer.poll(Duration::ZERO);
            std::thread::sleep((due - now).min(Duration::from_millis(1)));
            continue;
        }
        let (id, body) = &posts[i % posts.len()];
        let id = format!("{id}-{i}");
        let mut v: serde_json::Value = serde_json::from_slice(body).expect("json");
        v["id"] = id.clone().into();
        let payload = v.to_string();
        sent.insert(id, now_ms());
        let _ = producer.send(BaseRecord::<(), _>::to(topic).payload(&payload));
        i += 1;
    }
    let _ = producer.flush(Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        collect(&consumer, &sent, &mut lat, Duration::from_millis(100));
    }
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "{{\"posts\": {n}, \"rate\": {rate}, \"alerts_matched\": {}, \"p50_ms\": {}, \"p90_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}}}",
        lat.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        lat.last().copied().unwrap_or(-1)
    );
}
