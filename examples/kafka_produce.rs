//! Produce every line of a JSON-lines file to a Kafka topic (benchmarks and tests):
//! `cargo run --release --example kafka_produce -- BROKERS TOPIC FILE`.
//! Prints the number of messages and messages/s.

use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, file] = &args[..] else {
        eprintln!("usage: kafka_produce BROKERS TOPIC FILE");
        std::process::exit(2);
    };
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let f = std::io::BufReader::new(std::fs::File::open(file).expect("open file"));
    let t = Instant::now();
    let mut n = 0u64;
    for (i, line) in f.split(b'\n').enumerate() {
        let line = line.expect("read");
        if line.is_empty() {
            continue;
        }
        let key = (i % 101).to_string();
        let mut rec = BaseRecord::to(topic).key(&key).payload(&line);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        n += 1;
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{{\"messages\": {n}, \"seconds\": {s:.3}, \"per_s\": {:.0}}}",
        n as f64 / s
    );
}
