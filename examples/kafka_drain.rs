//! A bare rdkafka consumer draining a topic, the baseline for the end-to-end Kafka
//! benchmark: `cargo run --release --example kafka_drain -- BROKERS TOPIC N`.
//! Reads N messages from the earliest offset (fresh group) and prints messages/s.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, n] = &args[..] else {
        eprintln!("usage: kafka_drain BROKERS TOPIC N");
        std::process::exit(2);
    };
    let want: u64 = n.parse().expect("N");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("drain-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut got = 0u64;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < want && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            start.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let s = start.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    println!(
        "{{\"messages\": {got}, \"seconds\": {s:.3}, \"per_s\": {:.0}}}",
        got as f64 / s.max(1e-9)
    );
}
