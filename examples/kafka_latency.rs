//! Ingest-to-alert latency at a steady rate: produces posts from a JSON-lines file to
//! TOPIC at RATE posts/s for SECONDS, reads ALERTS_TOPIC, and reports p50/p90/p99 of
//! (alert message timestamp − post send time), matched by post id:
//! `cargo run --release --example kafka_latency -- BROKERS TOPIC ALERTS_TOPIC FILE RATE SECONDS`.
//!
//! Posts are sent as they are due with `linger.ms` = 5 (`LINGER_MS` to change it; at
//! 0 or 1 Tansu falls seconds behind at 5,000 requests/s). In the same run a bare
//! consumer reads TOPIC and reports the broker's own produce-to-consume latency
//! (`bare_*`: receipt time − send time), the floor under any consumer's figure.

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
    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("latency-bare-{}", std::process::id()))
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    bare.subscribe(&[topic]).expect("subscribe");
    // Let the consumers join before producing.
    let t = Instant::now();
    for c in [&consumer, &bare] {
        while c.assignment().map(|a| a.count()).unwrap_or(0) == 0
            && t.elapsed() < Duration::from_secs(30)
        {
            c.poll(Duration::from_millis(100));
        }
    }
    let linger = std::env::var("LINGER_MS").unwrap_or_else(|_| "5".into());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", &linger)
        .create()
        .expect("producer");
    let mut bare_lat: Vec<i64> = Vec::new();
    let collect_bare = |bare: &BaseConsumer, sent: &HashMap<String, i64>, lat: &mut Vec<i64>| {
        while let Some(Ok(m)) = bare.poll(Duration::ZERO) {
            let now = now_ms();
            if let Some(Ok(v)) = m.payload().map(serde_json::from_slice::<serde_json::Value>) {
                if let Some(t0) = v["id"].as_str().and_then(|id| sent.get(id)) {
                    lat.push(now - t0);
                }
            }
        }
    };
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
            collect_bare(&bare, &sent, &mut bare_lat);
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
        collect(&consumer, &sent, &mut lat, Duration::from_millis(50));
        collect_bare(&bare, &sent, &mut bare_lat);
    }
    lat.sort_unstable();
    bare_lat.sort_unstable();
    let q = |lat: &[i64], p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "{{\"posts\": {n}, \"rate\": {rate}, \"linger_ms\": {linger}, \"alerts_matched\": {}, \"p50_ms\": {}, \"p90_ms\": {}, \"p99_ms\": {}, \"max_ms\": {}, \"bare_matched\": {}, \"bare_p50_ms\": {}, \"bare_p99_ms\": {}, \"bare_max_ms\": {}}}",
        lat.len(),
        q(&lat, 0.50),
        q(&lat, 0.90),
        q(&lat, 0.99),
        lat.last().copied().unwrap_or(-1),
        bare_lat.len(),
        q(&bare_lat, 0.50),
        q(&bare_lat, 0.99),
        bare_lat.last().copied().unwrap_or(-1)
    );
}
