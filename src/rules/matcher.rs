//! The per-post hot path: normalise each field, scan it with the rule set's
//! automaton (after a small trigger automaton, while that stops most posts), then
//! evaluate only the rules whose gate holds (see `gate`), on the hits of the sets
//! those rules use.
//!
//! Pure: no I/O, logging or metrics. A [`Matcher`] holds reusable buffers; keep one
//! per thread and feed it posts.

use std::sync::LazyLock;

use memchr::memmem;
use smallvec::SmallVec;

use super::compile::{
    field, is_unspaced, norm_handle, AccountFilter, Cond, Rule, RuleSet, Scope, NO_VERIFY,
};
use super::gate::GateCounter;
use crate::decode::Post;
use crate::normalize::{normalize_into, Normalized};

/// Which field of a post a piece of evidence is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldRef {
    /// `text`
    Text,
    /// `media[i].caption`
    Caption(u16),
    /// `media[i].alt_text`
    AltText(u16),
    /// `quoted_text`
    QuotedText,
}

impl FieldRef {
    /// The field's path in the post JSON (`text`, `media[0].caption`, …).
    pub fn path(self) -> String {
        match self {
            Self::Text => "text".into(),
            Self::QuotedText => "quoted_text".into(),
            Self::Caption(i) => format!("media[{i}].caption"),
            Self::AltText(i) => format!("media[{i}].alt_text"),
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Text => field::TEXT,
            Self::Caption(_) => field::CAPTION,
            Self::AltText(_) => field::ALT_TEXT,
            Self::QuotedText => field::QUOTED,
        }
    }

    /// The field's text in `post`.
    pub fn get<'p>(self, post: &'p Post<'_>) -> Option<&'p str> {
        match self {
            Self::Text => post.text.as_deref(),
            Self::QuotedText => post.quoted_text.as_deref(),
            Self::Caption(i) => post.media.as_ref()?.get(i as usize)?.caption.as_deref(),
            Self::AltText(i) => post.media.as_ref()?.get(i as usize)?.alt_text.as_deref(),
        }
    }
}

/// A span of evidence in the text as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The field.
    pub field: FieldRef,
    /// Byte offset of the start in the field's UTF-8 value.
    pub start: usize,
    /// Byte offset of the end (exclusive).
    pub end: usize,
    /// The original text of the span.
    pub matched: String,
    /// The list (or inline term set) that matched.
    pub list: String,
}

/// A rule that fired on a post.
#[derive(Debug, Clone)]
pub struct RuleMatch {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    /// Evidence spans, in field and text order.
    pub evidence: Vec<Evidence>,
    /// Countries named in the searched fields (ISO codes, first mention first),
    /// without the post's own country.
    pub targets: Vec<String>,
    /// The first mention of each target, in the order of `targets` (`list` is
    /// `country:XX`).
    pub target_evidence: Vec<Evidence>,
}

/// Why a candidate rule did or did not fire (for `explain`).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    /// Whether it fired.
    pub fired: bool,
    /// One-line verdict.
    pub verdict: String,
    /// Evidence of the match (or of the suppressed match).
    pub evidence: Vec<Evidence>,
    /// Exceptions that suppressed a match: description and their evidence.
    pub suppressed_by: Vec<(String, Vec<Evidence>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    set: u32,
    field: u8,
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Occ {
    field: u8,
    start: u32,
    end: u32,
    set: u32,
}

type Inst = SmallVec<[Occ; 4]>;

/// One match of an automaton pattern, before its entries' boundaries are checked.
#[derive(Debug, Clone, Copy)]
struct PatternHit {
    pattern: u32,
    field: u8,
    start: u32,
    end: u32,
}

/// Push the byte ranges of the web and mail addresses of a normalised text: a scheme
/// (`https://`, `ftp://` …) or `www.` up to the next whitespace, and `local@domain.tld`
/// (an `@` with a word before it; `@mentions` are not addresses).
pub(crate) fn web_spans(text: &str, field: u8, out: &mut Vec<(u8, u32, u32)>) {
    let b = text.as_bytes();
    let first = out.len();
    let to_space = |from: usize| {
        b[from..]
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .map_or(b.len(), |k| from + k)
    };
    let push = |out: &mut Vec<(u8, u32, u32)>, a: usize, e: usize| {
        let inside = out[first..]
            .iter()
            .any(|&(_, x, y)| x as usize <= a && e <= y as usize);
        if !inside {
            out.push((field, a as u32, e as u32));
        }
    };
    static SCHEME: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("://"));
    static WWW: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("www."));
    for at in SCHEME.find_iter(b) {
        let scheme = b[..at]
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-'))
            .count();
        if scheme >= 2 {
            push(out, at - scheme, to_space(at + 3));
        }
    }
    for at in WWW.find_iter(b) {
        if left_boundary(text, b, at) {
            push(out, at, to_space(at + 4));
        }
    }
    // ASCII only: CJK text runs into an address without a space.
    let local = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-');
    let domain = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-');
    for at in memchr::memchr_iter(b'@', b) {
        let before = b[..at].iter().rev().take_while(|c| local(c)).count();
        let after = b[at + 1..].iter().take_while(|c| domain(c)).count();
        let host = &b[at + 1..at + 1 + after];
        // `[\w-]+\.[\w.-]+`: a label, a dot, and something after it.
        let dotted = host
            .iter()
            .position(|&c| c == b'.')
            .is_some_and(|d| d > 0 && d + 1 < host.len());
        if before > 0 && dotted {
            push(out, at - before, at + 1 + after);
        }
    }
}

/// The range of `hits` (sorted by set) that belongs to set `s`.
fn set_hits(hits: &[Hit], s: u32) -> std::ops::Range<usize> {
    hits.partition_point(|h| h.set < s)..hits.partition_point(|h| h.set <= s)
}

/// Token span of an instance within one field.
#[derive(Debug, Clone, Copy)]
struct Span {
    field: u8,
    lo: u32,
    hi: u32,
    sent_lo: u32,
    sent_hi: u32,
}

#[derive(Debug, Default)]
struct Tokens {
    starts: Vec<u32>,
    sent: Vec<u32>,
}

#[derive(Debug)]
struct FieldBuf {
    kind: FieldRef,
    norm: Normalized,
    tokens: Tokens,
    tokenized: bool,
}

/// A set of term-set indices: a bitmap to look them up and the list of them, so that
/// clearing costs one step per member.
#[derive(Debug, Default)]
struct SetBits {
    bits: Vec<u64>,
    list: Vec<u32>,
}

impl SetBits {
    /// Make room for indices below `n` (emptying the set when the size changes).
    fn fit(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if self.bits.len() != words {
            self.bits = vec![0; words];
            self.list.clear();
        }
    }

    fn contains(&self, s: u32) -> bool {
        self.bits
            .get((s / 64) as usize)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    /// Add `s`; false when it was there already.
    fn insert(&mut self, s: u32) -> bool {
        let (w, bit) = ((s / 64) as usize, 1u64 << (s % 64));
        if self.bits[w] & bit != 0 {
            return false;
        }
        self.bits[w] |= bit;
        self.list.push(s);
        true
    }

    fn clear(&mut self) {
        for &s in &self.list {
            self.bits[(s / 64) as usize] = 0;
        }
        self.list.clear();
    }
}

/// Posts per sample of how often the trigger automaton lets a post through.
const TRIGGER_SAMPLE: u32 = 256;
/// Posts between samples.
const TRIGGER_RETRY: u32 = 8192;
/// Most instances any one condition produces; more are not needed to decide.
const MAX_INSTANCES: usize = 16;
/// Up to this many regex terms run one by one; more go through the RegexSet first.
const DIRECT_REGEXES: usize = 16;
/// Most combinations `near`/`all` explore per evaluation.
const MAX_COMBINATIONS: usize = 4096;

/// Reusable matching state. Not shared between threads.
#[derive(Debug, Default)]
pub struct Matcher {
    fields: Vec<FieldBuf>,
    nfields: usize,
    /// Automaton matches of the current post.
    pattern_hits: Vec<PatternHit>,
    /// Hits of the sets the candidate rules use, sorted (set, field, start, end).
    hits: Vec<Hit>,
    /// Gate atoms found in the current post (see `compile::ScanItem`).
    found: SetBits,
    /// Sets the candidate rules use.
    want: SetBits,
    /// Clauses of the rules' gates satisfied by the atoms found by the full scan and
    /// by the sets found by the trigger automaton.
    gate: GateCounter,
    trigger_gate: GateCounter,
    /// Sets the trigger automaton found.
    gate_found: SetBits,
    /// Whether to run the trigger automaton before the full scan, and how often it
    /// let the posts of the current sample through (see `prepare`).
    use_trigger: bool,
    trigger_seen: u32,
    trigger_passed: u32,
    /// Candidate rules of the current post, one bit per rule (all clear between posts).
    cand_bits: Vec<u64>,
    cand: Vec<u32>,
    mask: u8,
    verify_queue: Vec<u32>,
    /// Regex terms not yet run on this post (see `RuleSet::regex_lazy`).
    regex_pending: bool,
    /// Whether `hits` is final for this post (see `complete_hits`).
    hits_done: bool,
    /// Web and mail addresses of the current post: field, start, end.
    web: Vec<(u8, u32, u32)>,
    /// Which of `hits` `complete_hits` keeps (a reused buffer).
    keep: Vec<bool>,
}

impl Matcher {
    /// A matcher with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluate `post` against `rules`, appending one [`RuleMatch`] per rule that fires
    /// (in rule order) to `out`.
    pub fn match_post(&mut self, rules: &RuleSet, post: &Post<'_>, out: &mut Vec<RuleMatch>) {
        self.run(rules, post, out, None);
    }

    /// Like [`Matcher::match_post`], but also evaluates the disabled rule `id` (for
    /// running a disabled rule's examples).
    pub fn match_post_including_disabled(
        &mut self,
        rules: &RuleSet,
        post: &Post<'_>,
        out: &mut Vec<RuleMatch>,
        id: &str,
    ) {
        self.run(rules, post, out, Some(id));
    }

    fn run(
        &mut self,
        rules: &RuleSet,
        post: &Post<'_>,
        out: &mut Vec<RuleMatch>,
        also: Option<&str>,
    ) {
        // Only the enabled rules that pass the media and account filters are
        // evaluated, so only their sets' hits are needed.
        let keep =
            |rule: &Rule| (rule.enabled || also == Some(rule.id.as_str())) && prefilter(rule, post);
        if !self.prepare(rules, post, keep) {
            return;
        }
        for i in 0..self.cand.len() {
            let r = self.cand[i] as usize;
            let rule = &rules.rules[r];
            self.complete_hits(rules);
            if let Some(ev) = self.evaluate(rule, None) {
                let (targets, target_evidence) = self.targets(rules, rule, post);
                out.push(RuleMatch {
                    rule: r,
                    evidence: self.evidence(rules, post, ev),
                    targets,
                    target_evidence,
                });
            }
        }
        self.found.clear();
    }

    /// Like [`Matcher::match_post`], but reports every candidate rule with the reason
    /// it fired or not.
    pub fn explain(&mut self, rules: &RuleSet, post: &Post<'_>) -> Vec<Trace> {
        let mut traces = Vec::new();
        if !self.prepare(rules, post, |_| true) {
            return traces;
        }
        for i in 0..self.cand.len() {
            let r = self.cand[i] as usize;
            let rule = &rules.rules[r];
            let mut t = Trace {
                rule: r,
                fired: false,
                verdict: String::new(),
                evidence: Vec::new(),
                suppressed_by: Vec::new(),
            };
            if !rule.enabled {
                t.verdict = "rule is disabled".into();
            } else if rule.requires_media && !post.has_media() {
                t.verdict = "terms found, but the rule requires media and the post has none".into();
            } else if !accounts_pass(&rule.accounts, post) {
                t.verdict =
                    "terms found, but the account or language filter excludes this post".into();
            } else {
                self.complete_hits(rules);
                let mut sup = Vec::new();
                match self.evaluate(rule, Some(&mut sup)) {
                    Some(ev) => {
                        t.fired = true;
                        t.verdict = "fired".into();
                        t.evidence = self.evidence(rules, post, ev);
                    }
                    None if !sup.is_empty() => {
                        t.verdict =
                            "matched, but every match was suppressed by an exception".into();
                    }
                    None => t.verdict = "terms found, but the condition does not hold".into(),
                }
                for (desc, when, by) in sup {
                    if t.evidence.is_empty() {
                        t.evidence = self.evidence(rules, post, when);
                    }
                    let ev = self.evidence(rules, post, by);
                    // Every suppressed instance reports its exception; show each once.
                    if !t.suppressed_by.iter().any(|(d, e)| *d == desc && *e == ev) {
                        t.suppressed_by.push((desc, ev));
                    }
                }
            }
            traces.push(t);
        }
        self.found.clear();
        traces
    }

    /// Normalise and scan every field; collect the candidate rules (those whose gate
    /// holds and for which `keep` holds, in rule order) and the hits of the sets they
    /// use. False when there is no candidate.
    fn prepare(&mut self, rules: &RuleSet, post: &Post<'_>, keep: impl Fn(&Rule) -> bool) -> bool {
        self.nfields = 0;
        self.hits.clear();
        self.pattern_hits.clear();
        self.cand.clear();
        if let Some(t) = post.text.as_deref() {
            self.add_field(FieldRef::Text, t);
        }
        if let Some(m) = &post.media {
            for (i, m) in m.iter().enumerate().take(u16::MAX as usize) {
                if let Some(c) = m.caption.as_deref() {
                    self.add_field(FieldRef::Caption(i as u16), c);
                }
                if let Some(c) = m.alt_text.as_deref() {
                    self.add_field(FieldRef::AltText(i as u16), c);
                }
            }
        }
        if let Some(t) = post.quoted_text.as_deref() {
            self.add_field(FieldRef::QuotedText, t);
        }
        self.found.fit(rules.atoms());
        self.want.fit(rules.sets.len());
        self.gate_found.fit(rules.sets.len());
        // The trigger pays when it stops most posts; when most pass it, it is a
        // second scan of them. So it runs while it stops at least half of a sample
        // of TRIGGER_SAMPLE posts, and is tried again every TRIGGER_RETRY posts.
        if rules.trigger.is_some() {
            self.trigger_seen += 1;
            let sampling = self.trigger_seen <= TRIGGER_SAMPLE;
            let pass = (self.use_trigger || sampling).then(|| self.triggered(rules));
            if sampling {
                self.trigger_passed += u32::from(pass == Some(true));
                if self.trigger_seen == TRIGGER_SAMPLE {
                    self.use_trigger = self.trigger_passed * 2 <= TRIGGER_SAMPLE;
                }
            }
            if self.trigger_seen >= TRIGGER_RETRY {
                self.trigger_seen = 0;
                self.trigger_passed = 0;
            }
            if pass == Some(false) {
                return false;
            }
        }
        self.regex_pending = rules.regex_lazy && rules.regex_set.is_some();
        self.hits_done = false;
        for f in 0..self.nfields {
            self.scan(rules, f);
            if !self.regex_pending {
                self.scan_regexes(rules, f);
            }
        }
        // Candidates as a bitmap over rule indices: read back in rule order, no sort.
        let words = rules.rules.len().div_ceil(64);
        if self.cand_bits.len() != words {
            self.cand_bits = vec![0; words];
        }
        let cand_bits = &mut self.cand_bits;
        let found = &self.found;
        for &s in &found.list {
            self.gate.found(
                &rules.gates,
                s,
                |a| found.contains(a),
                |r| cand_bits[(r / 64) as usize] |= 1 << (r % 64),
            );
        }
        self.gate.reset();
        for (k, w) in self.cand_bits.iter_mut().enumerate() {
            let mut bits = std::mem::take(w);
            while bits != 0 {
                let r = k as u32 * 64 + bits.trailing_zeros();
                if keep(&rules.rules[r as usize]) {
                    self.cand.push(r);
                }
                bits &= bits - 1;
            }
        }
        if self.cand.is_empty() {
            self.found.clear();
            return false;
        }
        self.materialize(rules, post.country());
        true
    }

    /// Turn the automaton matches into hits of the sets the candidates use (and of
    /// the country sets, for targets), then sort all hits.
    fn materialize(&mut self, rules: &RuleSet, own: Option<&str>) {
        for &r in &self.cand {
            for &s in &rules.rules[r as usize].sets_used {
                self.want.insert(s);
            }
        }
        for ph in &self.pattern_hits {
            let text = self.fields[ph.field as usize].norm.as_str();
            let bytes = text.as_bytes();
            let (start, end) = (ph.start as usize, ph.end as usize);
            let (a, b) = rules.pattern_entries[ph.pattern as usize];
            let mut lb = None;
            let mut rb = None;
            for e in &rules.entries[a as usize..b as usize] {
                if e.verify != NO_VERIFY {
                    continue;
                }
                if !e.country && !self.want.contains(e.set) {
                    continue;
                }
                // `foreign_country`: a name of the posting account's own country is
                // not another state.
                if e.set == rules.foreign_set
                    && own.is_some_and(|own| names_country(rules, ph.pattern, own))
                {
                    continue;
                }
                if e.left && !*lb.get_or_insert_with(|| left_boundary(text, bytes, start)) {
                    continue;
                }
                if e.right && !*rb.get_or_insert_with(|| right_boundary(text, bytes, end)) {
                    continue;
                }
                let (s, t) = hit_span(text, start, end, e.left, e.right);
                self.hits.push(Hit {
                    set: e.set,
                    field: ph.field,
                    start: s,
                    end: t,
                });
            }
        }
        self.want.clear();
        self.hits.sort_unstable();
    }

    fn add_field(&mut self, kind: FieldRef, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.nfields == self.fields.len() {
            self.fields.push(FieldBuf {
                kind,
                norm: Normalized::new(),
                tokens: Tokens::default(),
                tokenized: false,
            });
        }
        let f = &mut self.fields[self.nfields];
        f.kind = kind;
        f.tokenized = false;
        normalize_into(text, &mut f.norm);
        self.nfields += 1;
    }

    /// Whether the trigger gate of some rule holds on the terms of the trigger
    /// automaton (with their boundaries). Most posts stop here after one scan of a small
    /// automaton.
    fn triggered(&mut self, rules: &RuleSet) -> bool {
        let Some((ac, map, gates)) = &rules.trigger else {
            return true;
        };
        self.gate_found.clear();
        for f in &self.fields[..self.nfields] {
            let text = f.norm.as_str();
            let bytes = text.as_bytes();
            for m in ac.find_overlapping_iter(text) {
                let (a, b) = rules.pattern_entries[map[m.pattern().as_usize()] as usize];
                for e in &rules.entries[a as usize..b as usize] {
                    if self.gate_found.contains(e.set) || !gates.names(e.set) {
                        continue;
                    }
                    // A wildcard phrase's anchor counts: its regex decides later.
                    if e.verify != NO_VERIFY
                        || ((!e.left || left_boundary(text, bytes, m.start()))
                            && (!e.right || right_boundary(text, bytes, m.end())))
                    {
                        self.gate_found.insert(e.set);
                        if self.trigger_gate.found(gates, e.set, |_| true, |_| ()) {
                            self.trigger_gate.reset();
                            return true;
                        }
                    }
                }
            }
        }
        self.trigger_gate.reset();
        false
    }

    /// Scan field `f` with the automaton: record its matches and mark the gate atoms
    /// found.
    fn scan(&mut self, rules: &RuleSet, f: usize) {
        let text = self.fields[f].norm.as_str();
        let bytes = text.as_bytes();
        if let Some(ac) = &rules.ac {
            for m in ac.find_overlapping_iter(text) {
                let p = m.pattern().as_usize();
                let (start, end) = (m.start(), m.end());
                self.pattern_hits.push(PatternHit {
                    pattern: p as u32,
                    field: f as u8,
                    start: start as u32,
                    end: end as u32,
                });
                let (a, b) = rules.pattern_scan[p];
                let mut lb = None;
                let mut rb = None;
                for i in &rules.scan_items[a as usize..b as usize] {
                    if i.verify != NO_VERIFY {
                        if !self.verify_queue.contains(&i.verify) {
                            self.verify_queue.push(i.verify);
                        }
                        continue;
                    }
                    // Found atoms only feed the gates; hits come from `pattern_hits`.
                    if self.found.contains(i.atom) {
                        continue;
                    }
                    if i.left && !*lb.get_or_insert_with(|| left_boundary(text, bytes, start)) {
                        continue;
                    }
                    if i.right && !*rb.get_or_insert_with(|| right_boundary(text, bytes, end)) {
                        continue;
                    }
                    self.found.insert(i.atom);
                }
            }
        }
        let mut spans = Vec::new();
        for k in 0..self.verify_queue.len() {
            let (pat, s) = &rules.verify[self.verify_queue[k] as usize];
            spans.clear();
            pat.find_all(text, &mut spans);
            for &(start, end) in &spans {
                self.hits.push(Hit {
                    set: *s,
                    field: f as u8,
                    start: start as u32,
                    end: end as u32,
                });
            }
            if !spans.is_empty() {
                self.found.insert(rules.set_atom(*s));
            }
        }
        self.verify_queue.clear();
    }

    /// Run the regex terms on field `f`.
    fn scan_regexes(&mut self, rules: &RuleSet, f: usize) {
        let text = self.fields[f].norm.as_str();
        let (hits, found) = (&mut self.hits, &mut self.found);
        let mut run = |(re, s): &(regex::Regex, u32)| {
            for m in re.find_iter(text) {
                if m.start() < m.end() {
                    hits.push(Hit {
                        set: *s,
                        field: f as u8,
                        start: m.start() as u32,
                        end: m.end() as u32,
                    });
                    found.insert(rules.set_atom(*s));
                }
            }
        };
        if rules.regexes.len() <= DIRECT_REGEXES {
            // Few regexes: each one's own literal prefilter beats the set's PikeVM.
            rules.regexes.iter().for_each(&mut run);
        } else if let Some(set) = &rules.regex_set {
            set.matches(text)
                .iter()
                .for_each(|i| run(&rules.regexes[i]));
        }
    }

    /// Run the regex terms now if they were left for later: before the first rule is
    /// evaluated. Their sets decide no candidate and no prefilter, so deferring them
    /// changes nothing but the work done on posts where no rule gets this far.
    fn run_pending_regexes(&mut self, rules: &RuleSet) {
        if !self.regex_pending {
            return;
        }
        self.regex_pending = false;
        let before = self.hits.len();
        for f in 0..self.nfields {
            self.scan_regexes(rules, f);
        }
        if self.hits.len() > before {
            self.hits.sort_unstable();
        }
    }

    /// Make the hits final before the first rule is evaluated: run the regex terms if
    /// they were left for later, then drop the hits that are no evidence — those in a
    /// web or mail address (`…/sanctions`, `sanctions@…` is a path, not a statement)
    /// and those of a list that overlap a hit of one of its `not_overlapping` lists
    /// without holding it whole (the `not` of `whether or not`, `will not` in `will
    /// not only`, negates nothing).
    fn complete_hits(&mut self, rules: &RuleSet) {
        if self.hits_done {
            return;
        }
        self.hits_done = true;
        self.run_pending_regexes(rules);
        self.web.clear();
        for f in 0..self.nfields {
            web_spans(self.fields[f].norm.as_str(), f as u8, &mut self.web);
        }
        if self.web.is_empty() && rules.not_overlapping.is_empty() {
            return;
        }
        let hits = &self.hits;
        let web = &self.web;
        let keep = &mut self.keep;
        keep.clear();
        keep.extend(hits.iter().map(|h| {
            !web.iter()
                .any(|&(f, a, b)| f == h.field && h.start < b && a < h.end)
        }));
        for (s, outer) in &rules.not_overlapping {
            let own = set_hits(hits, *s);
            if own.is_empty() {
                continue;
            }
            for o in outer.iter() {
                let others = &hits[set_hits(hits, *o)];
                for k in own.clone() {
                    let h = hits[k];
                    // Overlapping without holding it whole and more: `大使` inside
                    // `大使馆` (embassy) is no envoy, `大使馆工作人员` (embassy staff)
                    // is; the same span is no hold (`konsul*` on the word "Konsulat"
                    // that `konsulat*` also covers is no envoy).
                    keep[k] &= !others.iter().any(|g| {
                        g.field == h.field
                            && g.start < h.end
                            && h.start < g.end
                            && !(h.start <= g.start
                                && g.end <= h.end
                                && (h.start, h.end) != (g.start, g.end))
                    });
                }
            }
        }
        let mut k = 0;
        self.hits.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }

    /// Evaluate a rule; `Some(occurrences)` of the surviving matches when it fires.
    /// With `sup`, suppressed matches are recorded (exception, match, exception match).
    #[allow(clippy::type_complexity)]
    fn evaluate(
        &mut self,
        rule: &Rule,
        mut sup: Option<&mut Vec<(String, Vec<Occ>, Vec<Occ>)>>,
    ) -> Option<Vec<Occ>> {
        self.mask = rule.fields;
        let insts = self.eval(&rule.when);
        if insts.is_empty() {
            return None;
        }
        let mut exc: Vec<Option<Vec<Inst>>> = vec![None; rule.unless.len()];
        let mut kept: Vec<Occ> = Vec::new();
        let mut any = false;
        'inst: for inst in &insts {
            for (k, ex) in rule.unless.iter().enumerate() {
                if exc[k].is_none() {
                    exc[k] = Some(self.eval(&ex.cond));
                }
                let e_insts = exc[k].as_deref().unwrap_or(&[]);
                if let Some(by) = self.kills(inst, e_insts, ex.scope) {
                    if let Some(s) = sup.as_deref_mut() {
                        let desc = format!("unless #{} ({})", k + 1, ex.scope.describe());
                        s.push((desc, inst.to_vec(), by.to_vec()));
                    }
                    continue 'inst;
                }
            }
            any = true;
            kept.extend_from_slice(inst);
        }
        if !any {
            return None;
        }
        kept.sort_unstable();
        kept.dedup_by(|a, b| a.field == b.field && a.start == b.start && a.end == b.end);
        Some(kept)
    }

    /// The exception instance that suppresses `inst` within `scope`, if any.
    fn kills<'e>(&mut self, inst: &Inst, exc: &'e [Inst], scope: Scope) -> Option<&'e Inst> {
        for e in exc {
            // A piece of the evidence itself is no exception: the `non` inside `persona
            // non grata` does not negate it. (The same occurrence may be shared, and a
            // longer exception term around the evidence, `we recall that`, counts.)
            let inside = e.iter().any(|b| {
                inst.iter().any(|a| {
                    a.field == b.field
                        && a.start <= b.start
                        && b.end <= a.end
                        && (a.start, a.end) != (b.start, b.end)
                })
            });
            if inside {
                continue;
            }
            if e.is_empty() || scope == Scope::Post {
                return Some(e);
            }
            for a in inst {
                for b in e.iter() {
                    if a.field != b.field {
                        continue;
                    }
                    let hit = match scope {
                        Scope::Field | Scope::Post => true,
                        Scope::Sentence => {
                            let sa = self.span_of(a);
                            let sb = self.span_of(b);
                            ranges_overlap(sa.sent_lo, sa.sent_hi, sb.sent_lo, sb.sent_hi)
                        }
                        Scope::Distance(n) => {
                            let sa = self.span_of(a);
                            let sb = self.span_of(b);
                            gap(sa, sb) <= n as i64
                        }
                    };
                    if hit {
                        return Some(e);
                    }
                }
            }
        }
        None
    }

    fn eval(&mut self, c: &Cond) -> Vec<Inst> {
        match c {
            Cond::Set(s) => {
                let mut out = Vec::new();
                for h in &self.hits[set_hits(&self.hits, *s)] {
                    if self.fields[h.field as usize].kind.bit() & self.mask == 0 {
                        continue;
                    }
                    // Overlapping hits of one set at one place are one occurrence.
                    if let Some(last) = out.last() {
                        let l: &Inst = last;
                        if l[0].field == h.field && l[0].start == h.start {
                            continue;
                        }
                    }
                    let mut i = Inst::new();
                    i.push(Occ {
                        field: h.field,
                        start: h.start,
                        end: h.end,
                        set: h.set,
                    });
                    out.push(i);
                }
                out
            }
            Cond::Any(ch) => {
                let mut out = Vec::new();
                for k in ch {
                    out.extend(self.eval(k));
                }
                out
            }
            Cond::None(ch) => {
                for k in ch {
                    if !self.eval(k).is_empty() {
                        return Vec::new();
                    }
                }
                vec![Inst::new()]
            }
            Cond::AtLeast(n, ch) => {
                let mut merged = Inst::new();
                let mut held = 0;
                for k in ch {
                    let r = self.eval(k);
                    if let Some(first) = r.first() {
                        held += 1;
                        merged.extend_from_slice(first);
                    }
                }
                if held >= *n {
                    vec![merged]
                } else {
                    Vec::new()
                }
            }
            Cond::All(ch) => {
                let mut lists = Vec::with_capacity(ch.len());
                for k in ch {
                    let r = self.eval(k);
                    if r.is_empty() {
                        return Vec::new();
                    }
                    lists.push(r);
                }
                combine(&lists, |_| true)
            }
            Cond::Near { children, within } => {
                let mut lists: Vec<Vec<Inst>> = Vec::with_capacity(children.len());
                let mut spans: Vec<Vec<Span>> = Vec::with_capacity(children.len());
                for k in children {
                    let r = self.eval(k);
                    let mut keep = Vec::new();
                    let mut sp = Vec::new();
                    for inst in r {
                        if let Some(s) = self.inst_span(&inst) {
                            keep.push(inst);
                            sp.push(s);
                        }
                    }
                    if keep.is_empty() {
                        return Vec::new();
                    }
                    lists.push(keep);
                    spans.push(sp);
                }
                near_combine(&lists, &spans, *within)
            }
        }
    }

    fn inst_span(&mut self, inst: &Inst) -> Option<Span> {
        let first = inst.first()?;
        let mut s = self.span_of(first);
        for o in &inst[1..] {
            if o.field != first.field {
                return None;
            }
            let t = self.span_of(o);
            if t.lo < s.lo {
                s.lo = t.lo;
                s.sent_lo = t.sent_lo;
            }
            if t.hi > s.hi {
                s.hi = t.hi;
                s.sent_hi = t.sent_hi;
            }
        }
        Some(s)
    }

    fn span_of(&mut self, o: &Occ) -> Span {
        let f = &mut self.fields[o.field as usize];
        if !f.tokenized {
            tokenize(f.norm.as_str(), &mut f.tokens);
            f.tokenized = true;
        }
        let t = &f.tokens;
        if t.starts.is_empty() {
            return Span {
                field: o.field,
                lo: 0,
                hi: 0,
                sent_lo: 0,
                sent_hi: 0,
            };
        }
        // Token containing the start; tokens starting before the end.
        let lo = t
            .starts
            .partition_point(|&s| s <= o.start)
            .saturating_sub(1);
        let hi = t.starts.partition_point(|&s| s < o.end).max(lo + 1);
        Span {
            field: o.field,
            lo: lo as u32,
            hi: hi as u32,
            sent_lo: t.sent[lo],
            sent_hi: t.sent[hi - 1],
        }
    }

    fn targets(
        &self,
        rules: &RuleSet,
        rule: &Rule,
        post: &Post<'_>,
    ) -> (Vec<String>, Vec<Evidence>) {
        let actor = post.country();
        let mut found: SmallVec<[(u8, u32, u32, &str); 8]> = SmallVec::new();
        for h in &self.hits {
            let Some(code) = rules.sets[h.set as usize].country.as_deref() else {
                continue;
            };
            if self.fields[h.field as usize].kind.bit() & rule.fields == 0 {
                continue;
            }
            if actor.is_some_and(|a| a.eq_ignore_ascii_case(code)) {
                continue;
            }
            found.push((h.field, h.start, h.end, code));
        }
        found.sort_unstable();
        let mut out: Vec<String> = Vec::new();
        let mut spans = Vec::new();
        for (field, start, end, c) in found {
            if out.iter().any(|o| o == c) {
                continue;
            }
            out.push(c.to_string());
            let f = &self.fields[field as usize];
            let orig = f.kind.get(post).unwrap_or_default();
            let r = f.norm.original_range(start as usize, end as usize);
            spans.push(Evidence {
                field: f.kind,
                start: r.start,
                end: r.end,
                matched: orig.get(r).unwrap_or_default().to_string(),
                list: format!("country:{c}"),
            });
        }
        (out, spans)
    }

    fn evidence(&self, rules: &RuleSet, post: &Post<'_>, occs: Vec<Occ>) -> Vec<Evidence> {
        let mut out: Vec<Evidence> = Vec::with_capacity(occs.len());
        for o in occs {
            let f = &self.fields[o.field as usize];
            let Some(orig) = f.kind.get(post) else {
                continue;
            };
            let r = f.norm.original_range(o.start as usize, o.end as usize);
            let matched = orig.get(r.clone()).unwrap_or_default().to_string();
            if out
                .iter()
                .any(|e| e.field == f.kind && e.start == r.start && e.end == r.end)
            {
                continue;
            }
            out.push(Evidence {
                field: f.kind,
                start: r.start,
                end: r.end,
                matched,
                list: rules.sets[o.set as usize].name.clone(),
            });
        }
        out.sort_by_key(|e| (e.field, e.start));
        out
    }
}

/// The media and account filters of `rule` (checked once its gate holds).
fn prefilter(rule: &Rule, post: &Post<'_>) -> bool {
    (!rule.requires_media || post.has_media()) && accounts_pass(&rule.accounts, post)
}

/// Whether `pattern` is a term of country `code`'s list.
fn names_country(rules: &RuleSet, pattern: u32, code: &str) -> bool {
    let (a, b) = rules.pattern_entries[pattern as usize];
    rules.entries[a as usize..b as usize].iter().any(|e| {
        e.country
            && rules.sets[e.set as usize]
                .country
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(code))
    })
}

/// The span of a literal term's hit at `start..end`: a wildcard end (no boundary
/// needed) covers the rest of its word, so evidence shows the whole word
/// ("diplomates", not "diplomat").
fn hit_span(text: &str, start: usize, end: usize, left: bool, right: bool) -> (u32, u32) {
    let s = if left { start } else { word_start(text, start) };
    let t = if right { end } else { word_end(text, end) };
    (s as u32, t as u32)
}

fn ranges_overlap(a0: u32, a1: u32, b0: u32, b1: u32) -> bool {
    a0 <= b1 && b0 <= a1
}

/// Tokens strictly between two spans (negative when they overlap).
fn gap(a: Span, b: Span) -> i64 {
    let max_lo = a.lo.max(b.lo) as i64;
    let min_hi = a.hi.min(b.hi) as i64;
    max_lo - min_hi
}

/// Cartesian combinations of instances (one per list) accepted by `ok`, capped.
fn combine(lists: &[Vec<Inst>], ok: impl Fn(&[usize]) -> bool) -> Vec<Inst> {
    let mut out = Vec::new();
    let mut idx = vec![0usize; lists.len()];
    let mut budget = MAX_COMBINATIONS;
    loop {
        if ok(&idx) {
            let mut inst = Inst::new();
            for (l, &i) in lists.iter().zip(&idx) {
                inst.extend_from_slice(&l[i]);
            }
            out.push(inst);
            if out.len() >= MAX_INSTANCES {
                return out;
            }
        }
        budget -= 1;
        if budget == 0 {
            return out;
        }
        // Odometer increment.
        let mut k = lists.len();
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < lists[k].len() {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// `near`: one instance per child, all in one field and one sentence, not overlapping
/// one another (the `non` inside `persona non grata` is not a negation near it), and
/// (with `within`) at most `n` tokens between them. Windows never cross a sentence break.
fn near_combine(lists: &[Vec<Inst>], spans: &[Vec<Span>], within: Option<u32>) -> Vec<Inst> {
    combine(lists, |idx| {
        for (a, &i) in idx.iter().enumerate() {
            for (b, &j) in idx.iter().enumerate().skip(a + 1) {
                let (x, y) = (spans[a][i], spans[b][j]);
                if x.field == y.field && x.lo < y.hi && y.lo < x.hi {
                    return false;
                }
            }
        }
        let first = spans[0][idx[0]];
        let (mut max_lo, mut min_hi) = (first.lo, first.hi);
        let (mut s_lo, mut s_hi) = (first.sent_lo, first.sent_hi);
        for (k, &i) in idx.iter().enumerate().skip(1) {
            let s = spans[k][i];
            if s.field != first.field {
                return false;
            }
            max_lo = max_lo.max(s.lo);
            min_hi = min_hi.min(s.hi);
            s_lo = s_lo.min(s.sent_lo);
            s_hi = s_hi.max(s.sent_hi);
        }
        if s_lo != s_hi {
            return false;
        }
        match within {
            Some(n) => (max_lo as i64 - min_hi as i64) <= n as i64,
            None => true,
        }
    })
}

fn accounts_pass(f: &AccountFilter, post: &Post<'_>) -> bool {
    let acc = post.account.as_ref();
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    let role = nonempty(acc.and_then(|a| a.role.as_deref()));
    let country = nonempty(acc.and_then(|a| a.country.as_deref()));
    let handle = nonempty(acc.and_then(|a| a.handle.as_deref())).map(norm_handle);
    let lang = nonempty(post.lang.as_deref())
        .map(|l| l.split(['-', '_']).next().unwrap_or(l).to_ascii_lowercase());
    let allow =
        |list: &Option<Vec<String>>, v: Option<&str>, eq: &dyn Fn(&str, &str) -> bool| match list {
            None => true,
            Some(l) => match v {
                None => !f.strict,
                Some(v) => l.iter().any(|x| eq(x, v)),
            },
        };
    let deny = |list: &[String], v: Option<&str>, eq: &dyn Fn(&str, &str) -> bool| {
        v.is_some_and(|v| list.iter().any(|x| eq(x, v)))
    };
    let exact = |a: &str, b: &str| a == b;
    let ci = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    allow(&f.roles, role, &exact)
        && !deny(&f.not_roles, role, &exact)
        && allow(&f.countries, country, &ci)
        && !deny(&f.not_countries, country, &ci)
        && allow(&f.handles, handle.as_deref(), &exact)
        && !deny(&f.not_handles, handle.as_deref(), &exact)
        && allow(&f.langs, lang.as_deref(), &exact)
}

/// A word character for boundaries and tokens: letters, digits and combining marks.
pub(crate) fn is_word(c: char) -> bool {
    c.is_alphanumeric() || (!c.is_ascii() && unicode_normalization::char::is_combining_mark(c))
}

pub(crate) fn left_boundary(text: &str, bytes: &[u8], start: usize) -> bool {
    if start == 0 {
        return true;
    }
    let b = bytes[start - 1];
    if b.is_ascii() {
        return !b.is_ascii_alphanumeric();
    }
    match text[..start].chars().next_back() {
        Some(c) => !is_word(c) || is_unspaced(c),
        None => true,
    }
}

pub(crate) fn right_boundary(text: &str, bytes: &[u8], end: usize) -> bool {
    if end >= bytes.len() {
        return true;
    }
    let b = bytes[end];
    if b.is_ascii() {
        return !b.is_ascii_alphanumeric();
    }
    match text[end..].chars().next() {
        Some(c) => !is_word(c) || is_unspaced(c),
        None => true,
    }
}

fn word_start(text: &str, mut at: usize) -> usize {
    while let Some(c) = text[..at].chars().next_back() {
        if !is_word(c) || is_unspaced(c) {
            break;
        }
        at -= c.len_utf8();
    }
    at
}

pub(crate) fn word_end(text: &str, mut at: usize) -> usize {
    while let Some(c) = text[at..].chars().next() {
        if !is_word(c) || is_unspaced(c) {
            break;
        }
        at += c.len_utf8();
    }
    at
}

/// Split normalised text into tokens (runs of word characters; every character of an
/// unspaced script is its own token) and number the sentences.
fn tokenize(text: &str, out: &mut Tokens) {
    out.starts.clear();
    out.sent.clear();
    let bytes = text.as_bytes();
    let mut sentence = 0u32;
    let mut in_word = false;
    let mut word_len = 0usize;
    for (i, c) in text.char_indices() {
        if is_word(c) {
            if is_unspaced(c) {
                out.starts.push(i as u32);
                out.sent.push(sentence);
                in_word = false;
                continue;
            }
            if !in_word {
                out.starts.push(i as u32);
                out.sent.push(sentence);
                in_word = true;
                word_len = 0;
            }
            word_len += 1;
            continue;
        }
        let was_word_len = if in_word { word_len } else { 0 };
        in_word = false;
        let ends = match c {
            '\n' | '!' | '?' | '…' | '。' | '！' | '？' | '؟' | '؛' => true,
            // A full stop ends a sentence when followed by a space or the end, and not
            // after a single letter (u.s., e.g.).
            '.' => {
                let next = bytes.get(i + 1);
                (next.is_none() || next == Some(&b' ') || next == Some(&b'\n')) && was_word_len != 1
            }
            _ => false,
        };
        if ends {
            sentence += 1;
        }
    }
}

#[cfg(test)]
mod tests;
