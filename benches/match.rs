//! Criterion benches of the hot path: normalise one field, and decode + normalise +
//! match one post against the shipped rules.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use attache::decode::{decode, Limits};
use attache::normalize::{normalize_into, Normalized};
use attache::rules::{self, Matcher};

fn posts() -> Vec<String> {
    let sample =
        attache::embedded::sample(attache::embedded::DEFAULT_SAMPLE).expect("bundled sample");
    sample
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = rules::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    )))
    .expect("shipped rules compile");
    let posts = posts();

    let mut g = c.benchmark_group("normalize");
    let texts: Vec<String> = posts
        .iter()
        .filter_map(|p| {
            decode(p.as_bytes(), &Limits::default())
                .ok()
                .and_then(|p| p.text.map(|t| t.into_owned()))
        })
        .collect();
    g.throughput(Throughput::Bytes(
        texts.iter().map(|t| t.len() as u64).sum(),
    ));
    g.bench_function("sample_stream_texts", |b| {
        let mut out = Normalized::new();
        b.iter(|| {
            for t in &texts {
                normalize_into(t, &mut out);
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode_match");
    g.throughput(Throughput::Elements(posts.len() as u64));
    g.bench_function("sample_stream_posts", |b| {
        let mut m = Matcher::new();
        let mut out = Vec::new();
        b.iter_batched(
            || (),
            |_| {
                for p in &posts {
                    if let Ok(post) = decode(p.as_bytes(), &Limits::default()) {
                        out.clear();
                        m.match_post(&rules, &post, &mut out);
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
