//! The default rules and sample streams compiled into the binary.

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The embedded default stream (August 2018 Canada–Saudi sequence).
pub const DEFAULT_SAMPLE: &str = "samples/canada_saudi_2018.jsonl";

/// An embedded sample by path (`samples/…jsonl`) or bare file name.
pub fn sample(name: &str) -> Option<&'static str> {
    SAMPLES
        .iter()
        .find(|(p, _)| *p == name || p.rsplit('/').next() == Some(name))
        .map(|(_, c)| *c)
}

/// The embedded rules as compiler sources.
pub fn rule_sources() -> Vec<crate::rules::Source> {
    RULES
        .iter()
        .map(|(p, t)| crate::rules::Source {
            path: format!("embedded:{p}").into(),
            text: (*t).to_string(),
        })
        .collect()
}
