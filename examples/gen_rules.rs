//! Generates N extra rules shaped like the analysts' rules, with terms drawn from a
//! stream's own vocabulary (the DESIGN §4 scaling test):
//! `cargo run --release --example gen_rules -- N POSTS.jsonl [SEED] > rules-extra/extra.yaml`.
//!
//! Terms are words (some as prefix wildcards, `word*`) and two-word phrases of the first
//! 20,000 posts' texts and media texts that occur in 0.2–20% of them. Each rule pairs two term sets of
//! one or two terms, `near: [A, B] within W` (W of 4–12 tokens, 3 rules in 4) or
//! `all: [A, B]`, with one `unless` exception of one or two terms (in the sentence, or
//! anywhere in the post), the shape of the shipped rules. A rule is indexed under A,
//! so it is a candidate on every post where a term of A occurs: A's terms occur in at
//! most 5% of posts each and are no country name (rules use the country list for
//! those); B may be any term, country names included. The pair is chosen by measuring
//! it on the sample, so that A and B meet in at most 0.5% of posts and:
//!
//! * 55%: A and B never occur in one sampled post (the prefilter rejects the rule);
//! * 43%: they do, so the rule is evaluated, but it fires on none of the sampled posts
//!   (too far apart, or the exception, often a word of such a post, is present);
//! * 2%: it fires on 1–5 of the 20,000 sampled posts.
//!
//! Statistics of the accepted rules on the sample go to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, BufWriter, Write};

/// Posts read for the vocabulary and the measurements.
const SAMPLE: usize = 20_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A term: its text as written in the rule and the tokens it matches.
#[derive(Clone)]
struct Term {
    written: String,
    words: Vec<String>,
    prefix: bool,
}

fn unspaced(c: char) -> bool {
    matches!(c as u32, 0x0E00..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF | 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0xFF66..=0xFF9F | 0x20000..=0x2FA1F)
}

/// Words of the text as the matcher sees it (normalised: lower case, no diacritics).
fn tokens(text: &str) -> Vec<String> {
    attache::normalize::normalize(text)
        .as_str()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Token positions where `t` occurs in `toks`.
fn positions(t: &Term, toks: &[String]) -> Vec<usize> {
    let n = t.words.len();
    if toks.len() < n {
        return Vec::new();
    }
    (0..=toks.len() - n)
        .filter(|&i| {
            t.words.iter().enumerate().all(|(k, w)| {
                let last = k + 1 == n;
                if last && t.prefix {
                    toks[i + k].starts_with(w.as_str())
                } else {
                    toks[i + k] == *w
                }
            })
        })
        .collect()
}

/// Which of the sampled posts a set of terms occurs in.
fn occurs(set: &[Term], posts: &[Vec<String>], index: &BTreeMap<String, Vec<u32>>) -> Vec<u32> {
    let mut out = BTreeSet::new();
    for t in set {
        // Candidate posts from the first word (a prefix term: every word it starts).
        let first = &t.words[0];
        let cands: Vec<u32> = if t.prefix && t.words.len() == 1 {
            index
                .range(first.clone()..)
                .take_while(|(w, _)| w.starts_with(first.as_str()))
                .flat_map(|(_, v)| v.iter().copied())
                .collect()
        } else {
            index.get(first).cloned().unwrap_or_default()
        };
        for p in cands {
            if !positions(t, &posts[p as usize]).is_empty() {
                out.insert(p);
            }
        }
    }
    out.into_iter().collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let path = args.next().expect("usage: gen_rules N POSTS.jsonl [SEED]");
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(11);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);

    let f = BufReader::new(std::fs::File::open(&path).expect("open posts"));
    let mut posts: Vec<Vec<String>> = Vec::new();
    let mut countries = BTreeSet::new();
    for line in f.lines().take(SAMPLE) {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(name) = v["account"]["name"].as_str() {
            // "Foreign Ministry of X": the country's words are not rule vocabulary.
            if let Some(c) = name.strip_prefix("Foreign Ministry of ") {
                countries.extend(tokens(c));
            }
        }
        // Text and media texts (rules search both), far enough apart for `near`.
        let mut toks = tokens(v["text"].as_str().unwrap_or(""));
        for m in v["media"].as_array().into_iter().flatten() {
            for f in ["caption", "alt_text"] {
                if let Some(t) = m[f].as_str() {
                    toks.extend(std::iter::repeat_n(String::new(), 100));
                    toks.extend(tokens(t));
                }
            }
        }
        posts.push(toks);
    }
    let total = posts.len().max(1);

    // Post frequency of words and two-word phrases.
    let mut index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut phrase_df: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, toks) in posts.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for w in toks {
            if seen.insert(w.clone()) {
                index.entry(w.clone()).or_default().push(i as u32);
            }
        }
        let mut seen = BTreeSet::new();
        for p in toks.windows(2) {
            if seen.insert((p[0].clone(), p[1].clone())) {
                *phrase_df.entry((p[0].clone(), p[1].clone())).or_default() += 1;
            }
        }
    }
    let usable = |w: &str| {
        w.chars().count() >= 3 && w.chars().all(char::is_alphabetic) && !w.chars().any(unspaced)
    };
    let (lo, hi) = (total / 500, total / 5);
    let mut vocab: Vec<Term> = Vec::new();
    for (w, ps) in &index {
        if usable(w) && (lo..=hi).contains(&ps.len()) {
            let chars = w.chars().count();
            let prefix = chars >= 6 && vocab.len() % 4 == 0;
            let written = if prefix {
                format!("{}*", w.chars().take(chars - 2).collect::<String>())
            } else {
                w.clone()
            };
            let stem = written.trim_end_matches('*').to_string();
            vocab.push(Term {
                written,
                words: vec![stem],
                prefix,
            });
        }
    }
    for ((a, b), df) in &phrase_df {
        if usable(a) && usable(b) && (lo..=hi).contains(df) {
            vocab.push(Term {
                written: format!("{a} {b}"),
                words: vec![a.clone(), b.clone()],
                prefix: false,
            });
        }
    }
    assert!(vocab.len() >= 20, "too little vocabulary in {path}");
    let occ: Vec<Vec<u32>> = vocab
        .iter()
        .map(|t| occurs(std::slice::from_ref(t), &posts, &index))
        .collect();
    // Rules are indexed under A: its terms are words an analyst would key a rule on,
    // in at most 5% of posts and no country name (rules use the country list for those).
    let keys: Vec<usize> = (0..vocab.len())
        .filter(|&i| {
            occ[i].len() <= total / 20 && !vocab[i].words.iter().any(|w| countries.contains(w))
        })
        .collect();
    let union = |ids: &[usize]| -> Vec<u32> {
        let mut v: Vec<u32> = ids.iter().flat_map(|&i| occ[i].iter().copied()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };

    let quota = [n * 55 / 100, n * 43 / 100];
    let mut made = [0usize; 3];
    let out = std::io::stdout();
    let mut w = BufWriter::new(out.lock());
    let _ = writeln!(
        w,
        "# {n} generated rules drawn from the vocabulary of {path} (examples/gen_rules.rs)\ncategory: generated\nrules:"
    );
    let q = |ids: &[usize]| {
        serde_json::to_string(
            &ids.iter()
                .map(|&i| vocab[i].written.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default()
    };
    let mut i = 0;
    let (mut cand_sum, mut eval_sum, mut fire_sum) = (0usize, 0usize, 0usize);
    let mut tries = 0usize;
    while i < n {
        tries += 1;
        let a: Vec<usize> = (0..1 + rng.below(2))
            .map(|_| keys[rng.below(keys.len())])
            .collect();
        let b: Vec<usize> = (0..1 + rng.below(2))
            .map(|_| rng.below(vocab.len()))
            .collect();
        let near = rng.below(4) != 0;
        let within = [4, 6, 8, 12][rng.below(4)];
        let occ_a = union(&a);
        let occ_b = union(&b);
        let both: Vec<u32> = occ_a
            .iter()
            .filter(|p| occ_b.binary_search(p).is_ok())
            .copied()
            .collect();
        // Evaluated rules: their terms meet in at most 0.5% of posts.
        if both.len() > total / 200 {
            continue;
        }
        // Exceptions: a term of a post where both occur, when there is one (what an
        // analyst adds after a false positive), else any term.
        let u: Vec<usize> = (0..1 + rng.below(2))
            .map(|_| match both.first() {
                Some(&p) if rng.below(2) == 0 => {
                    let with: Vec<usize> = (0..vocab.len())
                        .filter(|&t| {
                            occ[t].binary_search(&p).is_ok() && !a.contains(&t) && !b.contains(&t)
                        })
                        .collect();
                    if with.is_empty() {
                        rng.below(vocab.len())
                    } else {
                        with[rng.below(with.len())]
                    }
                }
                _ => rng.below(vocab.len()),
            })
            .collect();
        // An exception that is a word of the evidence does not suppress it.
        let words = |ids: &[usize]| -> BTreeSet<String> {
            ids.iter()
                .flat_map(|&t| vocab[t].words.iter().cloned())
                .collect()
        };
        let evidence_words = words(&[a.as_slice(), b.as_slice()].concat());
        if words(&u).iter().any(|w| evidence_words.contains(w)) {
            continue;
        }
        let occ_u = union(&u);
        // The exception's scope: the whole post, or (default) the match's sentence; the
        // estimate below counts a sentence-scoped exception as never suppressing.
        let post_scope = rng.below(2) == 0;
        let fires = both
            .iter()
            .filter(|&&p| {
                if post_scope && occ_u.binary_search(&p).is_ok() {
                    return false;
                }
                if !near {
                    return true;
                }
                let toks = &posts[p as usize];
                // Token spans; `within` counts the tokens between two spans.
                let spans = |ids: &[usize]| -> Vec<(usize, usize)> {
                    ids.iter()
                        .flat_map(|&t| {
                            let len = vocab[t].words.len();
                            positions(&vocab[t], toks)
                                .into_iter()
                                .map(move |p| (p, p + len))
                        })
                        .collect()
                };
                let (pa, pb) = (spans(&a), spans(&b));
                pa.iter().any(|x| {
                    pb.iter()
                        .any(|y| x.0.max(y.0) as i64 - x.1.min(y.1) as i64 <= within as i64)
                })
            })
            .count();
        let class = match (both.len(), fires) {
            (0, _) => 0,
            (_, 0) => 1,
            (_, 1..=5) => 2,
            _ => continue,
        };
        // Quotas, relaxed for classes 0 and 1 if a stream is too small to fill them.
        let relaxed = tries > 20 * n && class < 2;
        if class < 2 && made[class] >= quota[class] && !relaxed {
            continue;
        }
        if class == 2 && made[2] >= n - quota[0] - quota[1] {
            continue;
        }
        made[class] += 1;
        cand_sum += occ_a.len();
        eval_sum += both.len();
        fire_sum += fires;
        let when = if near {
            format!(
                "near: [{{ terms: {} }}, {{ terms: {} }}], within: {within}",
                q(&a),
                q(&b)
            )
        } else {
            format!("all: [{{ terms: {} }}, {{ terms: {} }}]", q(&a), q(&b))
        };
        let unless = if post_scope {
            format!("{{ any: [{{ terms: {} }}], scope: post }}", q(&u))
        } else {
            format!("{{ any: [{{ terms: {} }}] }}", q(&u))
        };
        let _ = writeln!(
            w,
            "  - {{ id: gen.{i}, title: generated {i}, severity: low, when: {{ {when} }}, unless: [{unless}] }}"
        );
        i += 1;
    }
    let _ = w.flush();
    let per_post = |x: usize| x as f64 / total as f64;
    eprintln!(
        "gen_rules: {n} rules from {} terms ({tries} tried); on the {total} sampled posts, per post: {:.1} candidate rules, {:.2} evaluated (all required terms present), {:.4} firing; classes (never together, evaluated only, firing): {made:?}",
        vocab.len(),
        per_post(cand_sum),
        per_post(eval_sum),
        per_post(fire_sum),
    );
}
