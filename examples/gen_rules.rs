//! Generates N extra rules whose terms are drawn from a stream's own vocabulary, so
//! they are hit and evaluated (the DESIGN §4 scaling test):
//! `cargo run --release --example gen_rules -- N POSTS.jsonl [SEED] > rules-extra/extra.yaml`.
//!
//! Each rule is `near: [terms A, terms B] within 6` with an `unless`, where A and B are
//! words or two-word phrases that occur in the stream (taken from the first 20,000
//! posts), the shape of the real rule sets.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let path = args.next().expect("usage: gen_rules N POSTS.jsonl [SEED]");
    let mut seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(11) | 1;
    let f = BufReader::new(std::fs::File::open(&path).expect("open posts"));
    let mut words = BTreeSet::new();
    let mut phrases = BTreeSet::new();
    for line in f.lines().take(20_000) {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let text = v["text"].as_str().unwrap_or("").to_lowercase();
        let toks: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3 && w.chars().all(|c| c.is_alphabetic()))
            .collect();
        for w in &toks {
            words.insert(w.to_string());
        }
        for p in toks.windows(2) {
            phrases.insert(format!("{} {}", p[0], p[1]));
        }
    }
    let vocab: Vec<String> = words.into_iter().chain(phrases).collect();
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut pick = |k: usize| -> Vec<String> {
        (0..k)
            .map(|_| vocab[(next() % vocab.len() as u64) as usize].clone())
            .collect()
    };
    let out = std::io::stdout();
    let mut w = BufWriter::new(out.lock());
    let _ = writeln!(
        w,
        "# {n} generated rules drawn from the vocabulary of {path}\ncategory: generated\nrules:"
    );
    for i in 0..n {
        let (a, b, u) = (pick(2), pick(2), pick(1));
        let _ = writeln!(
            w,
            "  - {{ id: gen.{i}, title: generated {i}, severity: low, when: {{ near: [{{ terms: {a:?} }}, {{ terms: {b:?} }}], within: 6 }}, unless: [{{ terms: {u:?} }}] }}"
        );
    }
    let _ = w.flush();
}
