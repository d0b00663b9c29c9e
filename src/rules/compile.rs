//! Compile rule files into an immutable [`RuleSet`]: validate, intern every term into
//! one Aho-Corasick automaton (plus a RegexSet for regex terms) and index each rule
//! under the terms it cannot fire without.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use sha2::{Digest, Sha256};

use super::format::{self, RawCond, RawExample, RawFile, RawList, RawRule, Spanned};
use super::gate::{self, GateIndex};
use super::{Diagnostic, LoadError, Severity};
use crate::normalize::normalize;

/// Largest compiled size of one regex term (bytes); bigger is a `check` error.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Largest compiled size of the RegexSet of all regex terms (bytes).
pub const REGEX_SET_SIZE_LIMIT: usize = 32 << 20;
/// Name of the built-in list made of every country term.
pub const COUNTRY_LIST: &str = "country";
/// The built-in list of every country term, whose hits naming the posting account's
/// own country do not count ("another state").
pub const FOREIGN_COUNTRY_LIST: &str = "foreign_country";
/// The key of a list that names the lists inside whose hits its own hits do not count.
pub const NOT_OVERLAPPING: &str = "not_overlapping";

/// One rule file's text, as read from disk (or embedded).
#[derive(Debug, Clone)]
pub struct Source {
    /// Path shown in diagnostics.
    pub path: PathBuf,
    /// File content.
    pub text: String,
}

/// A loaded file, for `/rules` and `attache check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileInfo {
    /// Path as loaded.
    pub path: PathBuf,
    /// `rules`, `lists` or `countries`.
    pub kind: &'static str,
    /// Number of rules defined.
    pub rules: usize,
    /// Number of lists (or countries) defined.
    pub lists: usize,
}

/// Fields of a post a rule can look at.
pub mod field {
    /// The post body.
    pub const TEXT: u8 = 1;
    /// Media captions.
    pub const CAPTION: u8 = 2;
    /// Media alt texts.
    pub const ALT_TEXT: u8 = 4;
    /// Quoted / replied-to text.
    pub const QUOTED: u8 = 8;
    /// Default: text and media, not quoted text (it is context, not evidence).
    pub const DEFAULT: u8 = TEXT | CAPTION | ALT_TEXT;
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Set(u32),
    Any(Vec<Cond>),
    All(Vec<Cond>),
    None(Vec<Cond>),
    AtLeast(usize, Vec<Cond>),
    /// Children in one sentence of one field, at most `within` tokens apart.
    Near {
        children: Vec<Cond>,
        within: Option<u32>,
    },
}

/// Where an exception must hold to suppress a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The same sentence as the match (default).
    Sentence,
    /// The same field.
    Field,
    /// Anywhere in the searched fields.
    Post,
    /// Within this many tokens of the match.
    Distance(u32),
}

impl Scope {
    pub(crate) fn describe(self) -> String {
        match self {
            Self::Sentence => "sentence".into(),
            Self::Field => "field".into(),
            Self::Post => "post".into(),
            Self::Distance(n) => format!("within {n} tokens"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Exception {
    pub(crate) cond: Cond,
    pub(crate) scope: Scope,
}

/// Account and language filter; a missing post field passes unless `strict`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccountFilter {
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) not_roles: Vec<String>,
    pub(crate) countries: Option<Vec<String>>,
    pub(crate) not_countries: Vec<String>,
    pub(crate) handles: Option<Vec<String>>,
    pub(crate) not_handles: Vec<String>,
    pub(crate) langs: Option<Vec<String>>,
    pub(crate) strict: bool,
}

/// An example post embedded in a rule.
#[derive(Debug, Clone)]
pub struct Example {
    /// Line in the rule file.
    pub line: u64,
    /// Column in the rule file.
    pub column: u64,
    /// The post as canonical JSON.
    pub json: String,
    /// Short text for reports.
    pub label: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique, stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: String,
    /// Severity.
    pub severity: Severity,
    /// Escalation score.
    pub score: f64,
    /// Tags.
    pub tags: Vec<String>,
    /// References.
    pub references: Vec<String>,
    /// Whether the rule fires.
    pub enabled: bool,
    /// Defining file.
    pub file: PathBuf,
    /// Line of the rule's `id`.
    pub line: u64,
    /// Examples that must match.
    pub examples_match: Vec<Example>,
    /// Examples that must not match.
    pub examples_no_match: Vec<Example>,
    pub(crate) fields: u8,
    pub(crate) requires_media: bool,
    pub(crate) accounts: AccountFilter,
    pub(crate) when: Cond,
    pub(crate) unless: Vec<Exception>,
    /// Every set its condition and exceptions name (sorted): the hits evaluating it
    /// needs.
    pub(crate) sets_used: Vec<u32>,
}

/// One entry of an Aho-Corasick pattern: which set it belongs to and which ends
/// need a word boundary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) set: u32,
    pub(crate) left: bool,
    pub(crate) right: bool,
    /// For the anchor of a wildcard phrase: the index into `RuleSet::verify` of the
    /// regex to run on the field instead of recording a hit.
    pub(crate) verify: u32,
    /// Whether `set` names a country (its hits are kept for targets).
    pub(crate) country: bool,
}

/// What the full scan does with one match of an Aho-Corasick pattern: mark a gate
/// atom as found (after its boundary checks), or queue a wildcard phrase's regex.
///
/// The gates are indexed by atoms, not by sets: a literal atom is a pattern with its
/// boundary flags, and a set with regex or wildcard-phrase terms has one atom of its
/// own (`RuleSet::set_atom`). A common word in many small sets is then one step of
/// the scan, not one per set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanItem {
    pub(crate) atom: u32,
    pub(crate) left: bool,
    pub(crate) right: bool,
    /// Index into `RuleSet::verify`, or `NO_VERIFY` for an atom.
    pub(crate) verify: u32,
}

/// No verification regex.
pub(crate) const NO_VERIFY: u32 = u32::MAX;

/// A named or anonymous set of terms.
#[derive(Debug, Clone)]
pub(crate) struct TermSet {
    pub(crate) name: String,
    pub(crate) country: Option<String>,
}

/// A compiled, immutable rule set. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RuleSet {
    /// Rules in load order.
    pub rules: Vec<Rule>,
    /// Files loaded.
    pub files: Vec<FileInfo>,
    /// Content hash of every file (first 12 hex digits of SHA-256).
    pub version: String,
    pub(crate) sets: Vec<TermSet>,
    pub(crate) ac: Option<AhoCorasick>,
    /// Prefilter: an automaton of the terms of the small clauses of the rules' gates
    /// (no regex), for each of its patterns the index of the same pattern in `ac`,
    /// and the index of those clauses. A post on which no rule's clauses all hold is
    /// done after one cheap scan. `None` when some rule has no such clause, or when
    /// it would hold most of the terms.
    pub(crate) trigger: Option<(AhoCorasick, Vec<u32>, GateIndex)>,
    /// Per AC pattern, a range into `entries`.
    pub(crate) pattern_entries: Vec<(u32, u32)>,
    pub(crate) entries: Vec<Entry>,
    /// Per AC pattern, a range into `scan_items`: the gate atoms and wildcard phrases
    /// a match of it may find.
    pub(crate) pattern_scan: Vec<(u32, u32)>,
    pub(crate) scan_items: Vec<ScanItem>,
    /// Number of literal atoms; set `s`'s own atom is `literal_atoms + s`.
    pub(crate) literal_atoms: u32,
    pub(crate) regex_set: Option<RegexSet>,
    pub(crate) regexes: Vec<(Regex, u32)>,
    /// Whether regex terms may run only once a candidate rule is about to be evaluated:
    /// true when no regex set can decide which rules are candidates (none is in a
    /// gate) or a target (a country), so their hits are needed only by the evaluation
    /// itself.
    pub(crate) regex_lazy: bool,
    /// Wildcard-phrase regexes (run only when their anchor was found) and their set.
    pub(crate) verify: Vec<(WildPattern, u32)>,
    /// The index of the rules' gates over atoms (see [`ScanItem`]): only rules whose
    /// gate holds are evaluated.
    pub(crate) gates: GateIndex,
    /// The set of the `foreign_country` list (`u32::MAX` when no country is defined).
    pub(crate) foreign_set: u32,
    /// Sets whose hits do not count where they overlap a hit of one of the other
    /// sets (a list's `not_overlapping`: the `no` of pt `no país`), sorted by set.
    pub(crate) not_overlapping: Vec<(u32, Box<[u32]>)>,
    /// Number of distinct literal patterns.
    pub patterns: usize,
    /// The account registry (`kind: accounts` files).
    pub registry: crate::registry::Registry,
}

impl RuleSet {
    /// Look up a rule by id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The gate atom of set `s`'s regex and wildcard-phrase terms.
    pub(crate) fn set_atom(&self, s: u32) -> u32 {
        self.literal_atoms + s
    }

    /// Number of gate atoms (literal atoms, then one per set).
    pub(crate) fn atoms(&self) -> usize {
        self.literal_atoms as usize + self.sets.len()
    }

    /// Number of enabled rules.
    pub fn enabled(&self) -> usize {
        self.rules.iter().filter(|r| r.enabled).count()
    }

    /// An empty rule set (matches nothing).
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            files: Vec::new(),
            version: "empty".into(),
            sets: Vec::new(),
            ac: None,
            trigger: None,
            pattern_entries: Vec::new(),
            entries: Vec::new(),
            pattern_scan: Vec::new(),
            scan_items: Vec::new(),
            literal_atoms: 0,
            regex_set: None,
            regexes: Vec::new(),
            regex_lazy: true,
            verify: Vec::new(),
            gates: GateIndex::default(),
            foreign_set: u32::MAX,
            not_overlapping: Vec::new(),
            patterns: 0,
            registry: Default::default(),
        }
    }
}

/// Read every `*.yaml` / `*.yml` file under `dir` (recursively, sorted) and compile.
pub fn load_dir(dir: &Path) -> Result<RuleSet, LoadError> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| LoadError::io(&path, e))?;
        sources.push(Source { path, text });
    }
    if sources.is_empty() {
        return Err(LoadError::Invalid(vec![Diagnostic {
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            message: "no rule files (*.yaml) found".into(),
        }]));
    }
    load_sources(&sources)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| LoadError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Skip hidden entries: editors' swap files, and Kubernetes' `..data` and
        // `..2024_…` directories (the visible names are symlinks into them).
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| LoadError::io(&path, e))?;
        if meta.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compile already-read sources (used for embedded rules and tests).
pub fn load_sources(sources: &[Source]) -> Result<RuleSet, LoadError> {
    let mut b = Builder::default();
    let mut hasher = Sha256::new();
    let mut parsed: Vec<(usize, RawFile)> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        hasher.update(src.path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(src.text.as_bytes());
        hasher.update([0]);
        match serde_saphyr::from_str_with_options::<RawFile>(&src.text, parse_options()) {
            Ok(f) => parsed.push((i, f)),
            Err(e) => b.diags.push(yaml_diag(&src.path, &e)),
        }
    }
    let version = hex::encode(&hasher.finalize()[..6]);

    // Pass 1: lists, countries and accounts from every file, so any rule can use any list.
    let mut files = Vec::new();
    let mut registry = crate::registry::Registry::default();
    for (i, f) in &parsed {
        let path = &sources[*i].path;
        let kind = match f.kind.as_ref().map(|k| k.value.as_str()) {
            None | Some("rules") => "rules",
            Some("lists") => "lists",
            Some("countries") => "countries",
            Some("accounts") => "accounts",
            Some(other) => {
                let k = f.kind.as_ref().map(loc).unwrap_or((0, 0));
                b.diag(
                    path,
                    k,
                    format!(
                        "unknown file kind `{other}` (expected rules, lists, countries or accounts)"
                    ),
                );
                "rules"
            }
        };
        if kind == "accounts" {
            registry.add_file(path, &f.accounts, &mut b.diags);
        } else if let Some(a) = f.accounts.first() {
            b.diag(
                path,
                loc(&a.value.platform),
                "`accounts` belong in a file of `kind: accounts`".into(),
            );
        }
        for (name, list) in &f.lists {
            b.define_list(path, name, list, None);
        }
        for (code, list) in &f.countries {
            if code.len() != 2 || !code.bytes().all(|c| c.is_ascii_uppercase()) {
                b.diag(
                    path,
                    loc(list),
                    format!("country code `{code}` is not an upper-case ISO 3166-1 alpha-2 code"),
                );
                continue;
            }
            b.define_list(path, &format!("country:{code}"), list, Some(code.clone()));
        }
        files.push(FileInfo {
            path: path.clone(),
            kind,
            rules: f.rules.0,
            lists: f.lists.len() + f.countries.len() + f.accounts.len(),
        });
    }
    // The built-in `country` and `foreign_country` lists: every country term.
    let terms = std::mem::take(&mut b.country_terms);
    for name in [COUNTRY_LIST, FOREIGN_COUNTRY_LIST] {
        if terms.is_empty() {
            b.list_ids
                .insert(name.into(), (u32::MAX, PathBuf::new(), (0, 0)));
            continue;
        }
        let set = b.new_set(name.into(), None);
        for (path, at, term) in &terms {
            b.add_term(path, *at, term, set);
        }
        b.list_ids
            .insert(name.into(), (set, PathBuf::new(), (0, 0)));
    }

    b.resolve_not_overlapping();

    // Pass 2: rules.
    let mut ids: HashMap<String, (PathBuf, u64)> = HashMap::new();
    // Rules are read one at a time and dropped once compiled: the raw tree of a
    // large rule file is several times the size of its compiled rules.
    // Pass 1 pushed one `FileInfo` per parsed file, in order.
    for ((i, f), info) in parsed.into_iter().zip(&files) {
        if f.rules.0 == 0 {
            continue;
        }
        let path = &sources[i].path;
        let accounts = info.kind == "accounts";
        let mut first = true;
        let mut add = |raw: Spanned<RawRule>| {
            if accounts {
                if std::mem::take(&mut first) {
                    b.diag(
                        path,
                        loc(&raw.value.id),
                        "an accounts file cannot define rules".into(),
                    );
                }
                return;
            }
            let Some(rule) = b.rule(path, &f, &raw) else {
                return;
            };
            if let Some((p, l)) = ids.get(&rule.id) {
                b.diag(
                    path,
                    loc(&raw.value.id),
                    format!(
                        "duplicate rule id `{}` (first defined at {}:{l})",
                        rule.id,
                        p.display()
                    ),
                );
                return;
            }
            ids.insert(rule.id.clone(), (path.clone(), rule.line));
            b.rules.push(rule);
        };
        if let Err(e) = format::for_each_rule(&sources[i].text, parse_options(), &mut add) {
            b.diags.push(yaml_diag(path, &e));
        }
    }
    if !b.diags.is_empty() {
        b.diags
            .sort_by(|a, c| (&a.file, a.line, a.column).cmp(&(&c.file, c.line, c.column)));
        return Err(LoadError::Invalid(b.diags));
    }
    let mut rs = b.finish(files, version)?;
    rs.registry = registry;
    Ok(rs)
}

/// Parser options for rule files: they are trusted-ish but large (10,000 rules in
/// one file is ~1M nodes), so the node and event budgets are raised; the depth limit
/// stays.
fn parse_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 20_000_000,
            max_events: 40_000_000,
        },
    }
}

/// A YAML or shape error of a rule file, at its position.
fn yaml_diag(path: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let msg = e.without_snippet().to_string();
    let msg = msg.lines().next().unwrap_or("invalid YAML").to_string();
    Diagnostic {
        file: path.to_path_buf(),
        line,
        column,
        message: strip_location(&msg),
    }
}

fn strip_location(msg: &str) -> String {
    // serde-saphyr appends " at line X column Y"; we print our own prefix.
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn loc<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// A parsed term: literal with boundary flags, or a regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Term {
    Literal {
        text: String,
        left: bool,
        right: bool,
    },
    Regex(String),
    /// A phrase with `*` inside (`freeze* assets`), checked only on posts where its
    /// longest literal piece (the anchor) was found.
    Wild {
        pattern: WildPattern,
        anchor: String,
    },
}

/// Fold the non-ASCII characters of a regex the way the normaliser folds text, so that
/// a pattern written as published (Persian `تیر`, French `février`, `？`) matches the
/// normalised text it runs on (`تير`, `fevrier`, `?`). ASCII is left alone (`\D` must
/// not become `\d`); a folded character that is ASCII punctuation is escaped, and a
/// character that folds to nothing or to several characters is kept as written.
fn fold_regex(re: &str) -> String {
    let mut out = String::with_capacity(re.len());
    let mut one = [0u8; 4];
    for c in re.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let n = normalize(c.encode_utf8(&mut one));
        let mut folded = n.as_str().chars();
        match (folded.next(), folded.next()) {
            (Some(f), None) => out.push_str(&regex::escape(f.encode_utf8(&mut one))),
            _ => out.push(c),
        }
    }
    out
}

/// Parse one term as written in a list: `re:` regex, `*` wildcards at either end.
pub(crate) fn parse_term(raw: &str) -> Result<Term, String> {
    if let Some(re) = raw.strip_prefix("re:") {
        if re.is_empty() {
            return Err("empty regex term".into());
        }
        return Ok(Term::Regex(fold_regex(re)));
    }
    let t = raw.trim();
    if t != raw {
        return Err(format!("term `{raw}` has leading or trailing spaces"));
    }
    let left = !t.starts_with('*');
    let right = !t.ends_with('*');
    let core = t.trim_start_matches('*').trim_end_matches('*');
    if core.contains('*') {
        return wild_term(raw, core, left, right);
    }
    let n = normalize(core);
    let text = n.as_str().trim().to_string();
    if text.is_empty() {
        return Err(format!("term `{raw}` is empty after normalisation"));
    }
    let first_unspaced = text.chars().next().is_some_and(is_unspaced);
    let last_unspaced = text.chars().last().is_some_and(is_unspaced);
    Ok(Term::Literal {
        text,
        left: left && !first_unspaced,
        right: right && !last_unspaced,
    })
}

/// `freeze* assets`, `assets in * are frozen`: each `*` is any run of word characters.
fn wild_term(raw: &str, core: &str, left: bool, right: bool) -> Result<Term, String> {
    let mut segs = Vec::new();
    let mut anchor = String::new();
    for seg in core.split('*') {
        // Normalise each literal piece; keep its edge spaces (they separate words).
        let n = normalize(seg.trim());
        let piece = n.as_str().trim();
        let mut s = String::new();
        if seg.starts_with(' ') {
            s.push(' ');
        }
        s.push_str(piece);
        if seg.ends_with(' ') && seg.len() > 1 {
            s.push(' ');
        }
        if piece.chars().count() > anchor.chars().count() {
            anchor = piece.to_string();
        }
        segs.push(s);
    }
    if anchor.chars().count() < 2 {
        return Err(format!(
            "term `{raw}`: the literal parts are too short to search for"
        ));
    }
    Ok(Term::Wild {
        pattern: WildPattern { segs, left, right },
        anchor,
    })
}

/// A phrase with `*` between literal pieces, each `*` a run of word characters (none
/// included). Matched by hand: a regex with Unicode word classes per phrase would cost
/// hundreds of kilobytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WildPattern {
    segs: Vec<String>,
    left: bool,
    right: bool,
}

impl WildPattern {
    /// Every non-overlapping match in `text` (normalised), as byte ranges.
    pub(crate) fn find_all(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        let Some(first) = self.segs.first() else {
            return;
        };
        if first.is_empty() {
            return;
        }
        let mut from = 0;
        while let Some(i) = text[from..].find(first.as_str()) {
            let s = from + i;
            from = s + first.len();
            if self.left && !super::matcher::left_boundary(text, text.as_bytes(), s) {
                continue;
            }
            if let Some(e) = self.rest(text, s + first.len(), 1) {
                out.push((s, e));
                from = e.max(from);
            }
        }
    }

    fn rest(&self, text: &str, pos: usize, k: usize) -> Option<usize> {
        if k == self.segs.len() {
            return if !self.right {
                Some(super::matcher::word_end(text, pos))
            } else if super::matcher::right_boundary(text, text.as_bytes(), pos) {
                Some(pos)
            } else {
                None
            };
        }
        // The `*` before segment k takes 0..=n word characters; try each split.
        let run_end = super::matcher::word_end(text, pos);
        let seg = self.segs[k].as_str();
        let mut p = pos;
        loop {
            if text[p..].starts_with(seg) {
                if let Some(e) = self.rest(text, p + seg.len(), k + 1) {
                    return Some(e);
                }
            }
            if p >= run_end {
                return None;
            }
            p += text[p..].chars().next().map_or(1, char::len_utf8);
        }
    }
}

pub use crate::normalize::is_unspaced;

#[derive(Default)]
struct Builder {
    diags: Vec<Diagnostic>,
    sets: Vec<TermSet>,
    /// list name → (set id, defining file, location)
    list_ids: HashMap<String, (u32, PathBuf, (u64, u64))>,
    country_terms: Vec<(PathBuf, (u64, u64), String)>,
    /// normalised literal → pattern index
    literals: HashMap<String, u32>,
    pattern_text: Vec<String>,
    pattern_entries: Vec<Vec<Entry>>,
    regexes: Vec<(String, u32)>,
    verify: Vec<(WildPattern, u32)>,
    rules: Vec<Rule>,
    anon: usize,
    /// Inline term lists already given a set (see `anon_set`).
    anon_sets: HashMap<Vec<String>, u32>,
    /// `not_overlapping` of the lists, by name until every list is known (see
    /// `resolve_not_overlapping`).
    not_overlapping_names: Vec<(u32, String, PathBuf, Vec<Spanned<String>>)>,
    /// Resolved: a set and the sets inside whose hits its hits do not count.
    not_overlapping: Vec<(u32, Box<[u32]>)>,
}

impl Builder {
    fn diag(&mut self, file: &Path, at: (u64, u64), message: String) {
        self.diags.push(Diagnostic {
            file: file.to_path_buf(),
            line: at.0,
            column: at.1,
            message,
        });
    }

    fn new_set(&mut self, name: String, country: Option<String>) -> u32 {
        self.sets.push(TermSet { name, country });
        (self.sets.len() - 1) as u32
    }

    fn define_list(
        &mut self,
        path: &Path,
        name: &str,
        list: &Spanned<RawList>,
        country: Option<String>,
    ) {
        let at = loc(list);
        if name == COUNTRY_LIST || name == FOREIGN_COUNTRY_LIST {
            self.diag(
                path,
                at,
                format!("list name `{name}` is reserved for the union of all country terms"),
            );
            return;
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
        {
            self.diag(
                path,
                at,
                format!("list name `{name}`: use letters, digits, `_` and `-` only"),
            );
            return;
        }
        if let Some((_, p, l)) = self.list_ids.get(name) {
            let msg = format!(
                "duplicate list `{name}` (first defined at {}:{}:{})",
                p.display(),
                l.0,
                l.1
            );
            self.diag(path, at, msg);
            return;
        }
        let set = self.new_set(name.to_string(), country.clone());
        self.list_ids
            .insert(name.to_string(), (set, path.to_path_buf(), at));
        for (lang, terms) in &list.value {
            if lang == NOT_OVERLAPPING {
                if country.is_some() {
                    self.diag(
                        path,
                        at,
                        format!("country `{name}`: `{NOT_OVERLAPPING}` is for term lists"),
                    );
                } else {
                    let names = terms.clone();
                    self.not_overlapping_names.push((
                        set,
                        name.to_string(),
                        path.to_path_buf(),
                        names,
                    ));
                }
                continue;
            }
            if !valid_lang(lang) {
                self.diag(
                    path,
                    at,
                    format!(
                        "list `{name}`: `{lang}` is not a language code (e.g. en, fr, zh, or any)"
                    ),
                );
                continue;
            }
            for t in terms {
                let tat = loc(t);
                if country.is_some() {
                    self.country_terms
                        .push((path.to_path_buf(), tat, t.value.clone()));
                }
                self.add_term(path, tat, &t.value, set);
            }
        }
    }

    /// Resolve the `not_overlapping` list names, once every list is defined.
    fn resolve_not_overlapping(&mut self) {
        for (set, name, path, names) in std::mem::take(&mut self.not_overlapping_names) {
            let mut sets = Vec::new();
            for n in &names {
                match self.list_ids.get(n.value.as_str()) {
                    Some((s, _, _)) if *s == set => self.diag(
                        &path,
                        loc(n),
                        format!("list `{name}`: `{NOT_OVERLAPPING}` cannot name the list itself"),
                    ),
                    Some((s, _, _)) if *s != u32::MAX => sets.push(*s),
                    _ => self.diag(
                        &path,
                        loc(n),
                        format!(
                            "list `{name}`: `{NOT_OVERLAPPING}` names unknown list `{}`",
                            n.value
                        ),
                    ),
                }
            }
            sets.sort_unstable();
            sets.dedup();
            if !sets.is_empty() {
                self.not_overlapping.push((set, sets.into_boxed_slice()));
            }
        }
        self.not_overlapping.sort_unstable();
    }

    fn add_term(&mut self, path: &Path, at: (u64, u64), raw: &str, set: u32) {
        match parse_term(raw) {
            Err(msg) => self.diag(path, at, msg),
            Ok(Term::Regex(re)) => {
                match RegexBuilder::new(&re).size_limit(REGEX_SIZE_LIMIT).build() {
                    Ok(_) => self.regexes.push((re, set)),
                    Err(regex::Error::CompiledTooBig(n)) => self.diag(
                        path,
                        at,
                        format!("regex `{re}` is too large (compiled size over {n} bytes); simplify it or split it into terms"),
                    ),
                    Err(e) => self.diag(
                        path,
                        at,
                        format!("bad regex `{re}`: {}", e.to_string().replace('\n', " ")),
                    ),
                }
            }
            Ok(Term::Wild { pattern, anchor }) => {
                self.verify.push((pattern, set));
                let v = (self.verify.len() - 1) as u32;
                self.add_pattern(
                    anchor,
                    Entry {
                        set,
                        left: false,
                        right: false,
                        verify: v,
                        country: false,
                    },
                );
            }
            Ok(Term::Literal { text, left, right }) => {
                self.add_pattern(
                    text,
                    Entry {
                        set,
                        left,
                        right,
                        verify: NO_VERIFY,
                        country: false,
                    },
                );
            }
        }
    }

    fn add_pattern(&mut self, text: String, entry: Entry) {
        let next = self.pattern_text.len() as u32;
        let p = *self.literals.entry(text.clone()).or_insert(next);
        if p == next {
            self.pattern_text.push(text);
            self.pattern_entries.push(Vec::new());
        }
        let entries = &mut self.pattern_entries[p as usize];
        if !entries.iter().any(|e| {
            e.set == entry.set
                && e.left == entry.left
                && e.right == entry.right
                && e.verify == entry.verify
        }) {
            entries.push(entry);
        }
    }

    /// The gates over atoms (see [`ScanItem`]): `full[r]` is rule `r`'s gate over sets;
    /// each clause becomes the atoms of its sets. `set_terms` are the sets of the regex
    /// and wildcard-phrase terms (they have an atom of their own). Returns the number of literal atoms,
    /// per pattern its range of scan items, the items, and the index.
    fn atom_gates(
        nsets: usize,
        pattern_text: &[String],
        pattern_entries: &[Vec<Entry>],
        set_terms: impl Iterator<Item = u32>,
        full: &[Vec<Vec<u32>>],
    ) -> (u32, Vec<(u32, u32)>, Vec<ScanItem>, GateIndex) {
        let mut gated = vec![false; nsets];
        for clause in full.iter().flatten() {
            for &s in clause {
                gated[s as usize] = true;
            }
        }
        let mut set_atoms: Vec<Vec<u32>> = vec![Vec::new(); nsets];
        // Per literal atom, its pattern's length: the longer, the rarer (a guess).
        let mut atom_len: Vec<usize> = Vec::new();
        let mut literal_atoms = 0u32;
        let mut pattern_scan = Vec::with_capacity(pattern_entries.len());
        let mut scan_items: Vec<ScanItem> = Vec::new();
        for (p, es) in pattern_entries.iter().enumerate() {
            let start = scan_items.len();
            for e in es {
                if e.verify != NO_VERIFY {
                    scan_items.push(ScanItem {
                        atom: u32::MAX,
                        left: false,
                        right: false,
                        verify: e.verify,
                    });
                    continue;
                }
                if !gated[e.set as usize] {
                    continue;
                }
                let known = scan_items[start..]
                    .iter()
                    .find(|i| i.verify == NO_VERIFY && (i.left, i.right) == (e.left, e.right));
                let atom = match known {
                    Some(i) => i.atom,
                    None => {
                        atom_len.push(pattern_text[p].len());
                        literal_atoms += 1;
                        scan_items.push(ScanItem {
                            atom: literal_atoms - 1,
                            left: e.left,
                            right: e.right,
                            verify: NO_VERIFY,
                        });
                        literal_atoms - 1
                    }
                };
                set_atoms[e.set as usize].push(atom);
            }
            pattern_scan.push((start as u32, scan_items.len() as u32));
        }
        for s in set_terms {
            set_atoms[s as usize].push(literal_atoms + s);
        }
        let clauses: Vec<Vec<Vec<u32>>> = full
            .iter()
            .map(|g| {
                g.iter()
                    .map(|c| {
                        let mut atoms: Vec<u32> = c
                            .iter()
                            .flat_map(|s| set_atoms[*s as usize].iter().copied())
                            .collect();
                        atoms.sort_unstable();
                        atoms.dedup();
                        atoms
                    })
                    .collect()
            })
            .collect();
        // A clause is about as rare as its commonest atom; regex and wildcard-phrase
        // atoms count as common.
        let rarity = |c: &[u32]| {
            let shortest = c
                .iter()
                .map(|a| atom_len.get(*a as usize).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            (shortest as u64) << 8 | (255 - c.len().min(255)) as u64
        };
        let gates = GateIndex::with_checks(
            clauses.iter().map(Vec::as_slice),
            literal_atoms as usize + nsets,
            rarity,
        );
        (literal_atoms, pattern_scan, scan_items, gates)
    }

    /// The set of an inline term list. Identical lists share one set (named after
    /// the first), so a term common to many rules is one automaton entry, not one
    /// per rule.
    fn anon_set(&mut self, path: &Path, terms: &[(String, (u64, u64))], what: &str) -> u32 {
        self.anon += 1;
        let key: Vec<String> = terms.iter().map(|(t, _)| t.clone()).collect();
        if let Some(&set) = self.anon_sets.get(&key) {
            return set;
        }
        let set = self.new_set(format!("{what}#{}", self.anon), None);
        self.anon_sets.insert(key, set);
        for (t, at) in terms {
            self.add_term(path, *at, t, set);
        }
        set
    }

    fn rule(&mut self, path: &Path, file: &RawFile, raw: &Spanned<RawRule>) -> Option<Rule> {
        let r = &raw.value;
        let errors_before = self.diags.len();
        let id = r.id.value.trim().to_string();
        if id.is_empty() || id.contains(char::is_whitespace) {
            self.diag(
                path,
                loc(&r.id),
                "rule id must be non-empty and contain no spaces".into(),
            );
        }
        let category = match r.category.as_ref().or(file.category.as_ref()) {
            Some(c) if !c.value.trim().is_empty() => c.value.trim().to_string(),
            _ => {
                self.diag(
                    path,
                    loc(&r.id),
                    format!("rule `{id}` has no category (set `category` on the rule or the file)"),
                );
                String::new()
            }
        };
        let severity = match Severity::parse(&r.severity.value) {
            Some(s) => s,
            None => {
                self.diag(
                    path,
                    loc(&r.severity),
                    format!(
                        "unknown severity `{}` (expected info, low, medium, high or critical)",
                        r.severity.value
                    ),
                );
                Severity::Info
            }
        };
        let score = match &r.score {
            Some(s) if !(s.value.is_finite() && s.value >= 0.0) => {
                self.diag(path, loc(s), "score must be a finite number ≥ 0".into());
                0.0
            }
            Some(s) => s.value,
            None => severity.default_score(),
        };
        let mut fields = 0u8;
        match &r.fields {
            None => fields = field::DEFAULT,
            Some(list) => {
                for f in list {
                    fields |= match f.value.as_str() {
                        "text" => field::TEXT,
                        "media" => field::CAPTION | field::ALT_TEXT,
                        "caption" => field::CAPTION,
                        "alt_text" => field::ALT_TEXT,
                        "quoted_text" => field::QUOTED,
                        other => {
                            self.diag(
                                path,
                                loc(f),
                                format!("unknown field `{other}` (expected text, media, caption, alt_text or quoted_text)"),
                            );
                            0
                        }
                    };
                }
                if list.is_empty() {
                    self.diag(path, loc(&r.id), "`fields` is empty".into());
                }
            }
        }
        let accounts = self.accounts(path, r);
        let when = self.cond(path, &r.when, false);
        let mut unless = Vec::new();
        for u in &r.unless {
            let scope = self.scope(path, u);
            if let Some(cond) = self.cond(path, u, true) {
                unless.push(Exception { cond, scope });
            }
        }
        let (examples_match, examples_no_match) = self.examples(path, r);
        let when = when?;
        let mut sets_used = Vec::new();
        sets_of(&when, &mut sets_used);
        for u in &unless {
            sets_of(&u.cond, &mut sets_used);
        }
        // A set's hits are pruned by the hits of its `not_overlapping` sets: those are
        // needed too.
        for k in 0..sets_used.len() {
            if let Ok(i) = self
                .not_overlapping
                .binary_search_by_key(&sets_used[k], |(s, _)| *s)
            {
                sets_used.extend_from_slice(&self.not_overlapping[i].1);
            }
        }
        sets_used.sort_unstable();
        sets_used.dedup();
        if necessary(&when).is_none() {
            self.diag(
                path,
                loc(&r.when),
                "`when` can hold without any term being found (e.g. only `none`); add a term, list or regex it requires".into(),
            );
        }
        if self.diags.len() > errors_before {
            return None;
        }
        Some(Rule {
            id,
            title: r.title.clone(),
            description: r.description.clone(),
            category,
            severity,
            score,
            tags: r.tags.clone(),
            references: r.references.clone(),
            enabled: r.enabled.unwrap_or(true),
            file: path.to_path_buf(),
            line: r.id.referenced.line(),
            examples_match,
            examples_no_match,
            fields,
            requires_media: r.requires_media,
            accounts,
            when,
            unless,
            sets_used,
        })
    }

    fn scope(&mut self, path: &Path, u: &Spanned<RawCond>) -> Scope {
        if let Some(d) = &u.value.distance {
            if u.value.scope.is_some() {
                self.diag(
                    path,
                    loc(d),
                    "use either `scope` or `distance`, not both".into(),
                );
            }
            return Scope::Distance(d.value);
        }
        match u.value.scope.as_ref() {
            None => Scope::Sentence,
            Some(s) => match s.value.as_str() {
                "sentence" => Scope::Sentence,
                "field" => Scope::Field,
                "post" => Scope::Post,
                other => {
                    self.diag(
                        path,
                        loc(s),
                        format!("unknown scope `{other}` (expected sentence, field or post; or use `distance: N`)"),
                    );
                    Scope::Sentence
                }
            },
        }
    }

    fn accounts(&mut self, path: &Path, r: &RawRule) -> AccountFilter {
        let Some(a) = &r.accounts else {
            return AccountFilter::default();
        };
        const ROLES: [&str; 9] = [
            "foreign_ministry",
            "embassy",
            "head_of_state",
            "head_of_government",
            "minister",
            "spokesperson",
            "mission_to_un",
            "state_media",
            "other",
        ];
        let roles = |v: &Option<Vec<Spanned<String>>>, b: &mut Self| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|s| {
                        if !ROLES.contains(&s.value.as_str()) {
                            b.diag(
                                path,
                                loc(s),
                                format!(
                                    "unknown role `{}` (expected one of {})",
                                    s.value,
                                    ROLES.join(", ")
                                ),
                            );
                        }
                        s.value.clone()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let r_roles = roles(&a.roles, self);
        let r_not_roles = roles(&a.not_roles, self).unwrap_or_default();
        let countries = |v: &Option<Vec<Spanned<String>>>, b: &mut Self| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|s| {
                        let c = s.value.trim().to_ascii_uppercase();
                        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                            b.diag(
                                path,
                                loc(s),
                                format!("`{}` is not an ISO 3166-1 alpha-2 code", s.value),
                            );
                        }
                        c
                    })
                    .collect::<Vec<_>>()
            })
        };
        let c = countries(&a.countries, self);
        let nc = countries(&a.not_countries, self).unwrap_or_default();
        let handle = |v: &Option<Vec<Spanned<String>>>| {
            v.as_ref()
                .map(|v| v.iter().map(|s| norm_handle(&s.value)).collect::<Vec<_>>())
        };
        AccountFilter {
            roles: r_roles,
            not_roles: r_not_roles,
            countries: c,
            not_countries: nc,
            handles: handle(&a.handles),
            not_handles: handle(&a.not_handles).unwrap_or_default(),
            langs: a.langs.as_ref().map(|v| {
                v.iter()
                    .map(|s| s.value.trim().to_ascii_lowercase())
                    .collect()
            }),
            strict: a.strict,
        }
    }

    fn cond(&mut self, path: &Path, c: &Spanned<RawCond>, is_exception: bool) -> Option<Cond> {
        let at = loc(c);
        let r = &c.value;
        let ops = [
            r.list.is_some(),
            r.term.is_some(),
            r.terms.is_some(),
            r.regex.is_some(),
            r.any.is_some(),
            r.all.is_some(),
            r.none.is_some(),
            r.at_least.is_some(),
            r.near.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if ops != 1 {
            self.diag(
                path,
                at,
                if ops == 0 {
                    "condition has no operator (expected one of list, term, terms, regex, any, all, none, at_least, near)".into()
                } else {
                    "condition has more than one operator; wrap them in `all:` or `any:`".into()
                },
            );
            return None;
        }
        if !is_exception {
            if let Some(s) = &r.scope {
                self.diag(
                    path,
                    loc(s),
                    "`scope` is only allowed on `unless` entries".into(),
                );
            }
            if let Some(s) = &r.distance {
                self.diag(
                    path,
                    loc(s),
                    "`distance` is only allowed on `unless` entries".into(),
                );
            }
        }
        if r.near.is_none() {
            if let Some(w) = &r.within {
                self.diag(path, loc(w), "`within` is only allowed with `near`".into());
            }
            if r.sentence.is_some() {
                self.diag(path, at, "`sentence` is only allowed with `near`".into());
            }
        }
        if r.at_least.is_none() && r.of.is_some() {
            self.diag(path, at, "`of` is only allowed with `at_least`".into());
        }
        let children = |b: &mut Self, v: &[Spanned<RawCond>], what: &str| -> Option<Vec<Cond>> {
            if v.is_empty() {
                b.diag(path, at, format!("`{what}` needs at least one condition"));
                return None;
            }
            let out: Vec<Option<Cond>> = v.iter().map(|c| b.cond(path, c, false)).collect();
            out.into_iter().collect()
        };
        if let Some(name) = &r.list {
            return match self.list_ids.get(name.value.as_str()) {
                Some((u32::MAX, _, _)) => {
                    self.diag(
                        path,
                        loc(name),
                        format!(
                            "list `{}` is empty: no countries file is loaded",
                            name.value
                        ),
                    );
                    None
                }
                Some((set, _, _)) => Some(Cond::Set(*set)),
                None => {
                    let mut known: Vec<&String> = self
                        .list_ids
                        .keys()
                        .filter(|k| !k.starts_with("country:"))
                        .collect();
                    known.sort();
                    let hint = known
                        .iter()
                        .take(12)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.diag(
                        path,
                        loc(name),
                        format!("undefined list `{}` (defined lists: {hint})", name.value),
                    );
                    None
                }
            };
        }
        if let Some(t) = &r.term {
            return Some(Cond::Set(self.anon_set(
                path,
                &[(t.value.clone(), loc(t))],
                "term",
            )));
        }
        if let Some(ts) = &r.terms {
            if ts.is_empty() {
                self.diag(path, at, "`terms` is empty".into());
                return None;
            }
            let v: Vec<_> = ts.iter().map(|t| (t.value.clone(), loc(t))).collect();
            return Some(Cond::Set(self.anon_set(path, &v, "terms")));
        }
        if let Some(re) = &r.regex {
            let t = format!("re:{}", re.value);
            return Some(Cond::Set(self.anon_set(path, &[(t, loc(re))], "regex")));
        }
        if let Some(v) = &r.any {
            return children(self, v, "any").map(Cond::Any);
        }
        if let Some(v) = &r.all {
            return children(self, v, "all").map(Cond::All);
        }
        if let Some(v) = &r.none {
            return children(self, v, "none").map(Cond::None);
        }
        if let Some(n) = &r.at_least {
            let Some(of) = &r.of else {
                self.diag(path, loc(n), "`at_least` needs `of: [conditions]`".into());
                return None;
            };
            let kids = children(self, of, "of")?;
            if n.value == 0 || n.value as usize > kids.len() {
                self.diag(
                    path,
                    loc(n),
                    format!(
                        "`at_least: {}` must be between 1 and the {} conditions in `of`",
                        n.value,
                        kids.len()
                    ),
                );
                return None;
            }
            return Some(Cond::AtLeast(n.value as usize, kids));
        }
        if let Some(v) = &r.near {
            let kids = children(self, v, "near")?;
            if kids.len() < 2 {
                self.diag(path, at, "`near` needs at least two conditions".into());
                return None;
            }
            if kids
                .iter()
                .any(|k| matches!(k, Cond::None(_) | Cond::AtLeast(..)))
            {
                self.diag(path, at, "`near` children must be terms, lists, regexes, `any`, `all` or `near` (they need positions)".into());
                return None;
            }
            let sentence = r.sentence.unwrap_or(false);
            if r.within.is_none() && !sentence {
                self.diag(
                    path,
                    at,
                    "`near` needs `within: N` (tokens) or `sentence: true`".into(),
                );
                return None;
            }
            return Some(Cond::Near {
                children: kids,
                within: r.within.as_ref().map(|w| w.value),
            });
        }
        None
    }

    fn examples(&mut self, path: &Path, r: &RawRule) -> (Vec<Example>, Vec<Example>) {
        let Some(ex) = &r.examples else {
            return (Vec::new(), Vec::new());
        };
        let conv = |v: &[Spanned<RawExample>], b: &mut Self| {
            let mut out = Vec::new();
            for (n, e) in v.iter().enumerate() {
                let (line, column) = loc(e);
                let (json, label) = match &e.value {
                    RawExample::Text(t) => (
                        serde_json::json!({"id": format!("example-{line}"), "platform": "example", "text": t}).to_string(),
                        t.clone(),
                    ),
                    RawExample::Post(map) => {
                        let mut map = map.clone();
                        map.entry("id").or_insert_with(|| format!("example-{line}-{n}").into());
                        map.entry("platform").or_insert_with(|| "example".into());
                        let label = map
                            .get("text")
                            .and_then(|t| t.as_str())
                            .unwrap_or("(post)")
                            .to_string();
                        let json = serde_json::Value::Object(map).to_string();
                        if let Err(e) = crate::decode::decode(json.as_bytes(), &Default::default()) {
                            b.diag(path, (line, column), format!("example post does not decode: {e}"));
                        }
                        (json, label)
                    }
                };
                out.push(Example {
                    line,
                    column,
                    json,
                    label,
                });
            }
            out
        };
        let m = conv(&ex.matches, self);
        let n = conv(&ex.no_match, self);
        (m, n)
    }

    fn finish(self, files: Vec<FileInfo>, version: String) -> Result<RuleSet, LoadError> {
        let ac = if self.pattern_text.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&self.pattern_text)
                    .map_err(|e| {
                        LoadError::Invalid(vec![Diagnostic {
                            file: PathBuf::new(),
                            line: 0,
                            column: 0,
                            message: format!("cannot build the term automaton: {e}"),
                        }])
                    })?,
            )
        };
        let mut entries = Vec::new();
        let mut pattern_entries = Vec::with_capacity(self.pattern_entries.len());
        for es in &self.pattern_entries {
            let start = entries.len() as u32;
            entries.extend(es.iter().map(|e| Entry {
                country: self.sets[e.set as usize].country.is_some(),
                ..*e
            }));
            pattern_entries.push((start, entries.len() as u32));
        }
        let (regex_set, regexes) = if self.regexes.is_empty() {
            (None, Vec::new())
        } else {
            let set = RegexSetBuilder::new(self.regexes.iter().map(|(r, _)| r))
                .size_limit(REGEX_SET_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    LoadError::Invalid(vec![Diagnostic {
                        file: PathBuf::new(),
                        line: 0,
                        column: 0,
                        message: format!("the regex terms together are too large: {e}"),
                    }])
                })?;
            let mut v = Vec::new();
            for (r, s) in &self.regexes {
                // Checked individually in add_term.
                if let Ok(re) = RegexBuilder::new(r).size_limit(REGEX_SIZE_LIMIT).build() {
                    v.push((re, *s));
                }
            }
            (Some(set), v)
        };
        // Gates (see `gate`): every clause of the condition's necessary
        // condition for the full scan; for the trigger automaton only the clauses of
        // small sets, none of them a regex (the trigger cannot see regex hits).
        let mut size = vec![0usize; self.sets.len()];
        for es in &self.pattern_entries {
            for e in es {
                size[e.set as usize] += 1;
            }
        }
        let mut is_regex = vec![false; self.sets.len()];
        for (_, s) in &self.regexes {
            is_regex[*s as usize] = true;
        }
        let rules = self.rules;
        let mut trigger_possible = true;
        let mut full = Vec::with_capacity(rules.len());
        let mut trigger_gates = Vec::with_capacity(rules.len());
        for rule in &rules {
            let g = gate::cnf(&rule.when, &size);
            let mut small: Vec<Vec<u32>> = g
                .iter()
                .filter(|c| !c.iter().any(|s| is_regex[*s as usize]))
                .cloned()
                .collect();
            let smallest = small
                .iter()
                .min_by_key(|c| gate::clause_terms(c, &size))
                .cloned();
            small.retain(|c| gate::clause_terms(c, &size) <= gate::TRIGGER_CLAUSE_TERMS);
            if small.is_empty() {
                small.extend(smallest);
            }
            if small.is_empty() {
                trigger_possible = false;
            }
            full.push(g);
            trigger_gates.push(small);
        }
        let (literal_atoms, pattern_scan, scan_items, gates) = Self::atom_gates(
            self.sets.len(),
            &self.pattern_text,
            &self.pattern_entries,
            self.regexes
                .iter()
                .map(|(_, s)| *s)
                .chain(self.verify.iter().map(|(_, s)| *s)),
            &full,
        );
        let trigger_gates =
            GateIndex::new(trigger_gates.iter().map(Vec::as_slice), self.sets.len());
        let regex_lazy = !self.regexes.iter().any(|(_, s)| {
            gates.names(literal_atoms + *s) || self.sets[*s as usize].country.is_some()
        });
        let trigger = if !trigger_possible || self.pattern_text.is_empty() {
            None
        } else {
            let mut texts = Vec::new();
            let mut map = Vec::new();
            for (i, es) in self.pattern_entries.iter().enumerate() {
                if es.iter().any(|e| trigger_gates.names(e.set)) {
                    texts.push(self.pattern_text[i].as_str());
                    map.push(i as u32);
                }
            }
            // A trigger holding most of the terms saves little and costs a second scan
            // of every post that passes it.
            if texts.len() * 2 > self.pattern_text.len() {
                None
            } else {
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&texts)
                    .ok()
                    .map(|a| (a, map, trigger_gates))
            }
        };
        // Registered with the built-in lists (`u32::MAX` when no country is defined).
        let foreign_set = self
            .list_ids
            .get(FOREIGN_COUNTRY_LIST)
            .map_or(u32::MAX, |(set, _, _)| *set);
        Ok(RuleSet {
            foreign_set,
            not_overlapping: self.not_overlapping,
            trigger,
            patterns: self.pattern_text.len(),
            rules,
            files,
            version,
            sets: self.sets,
            ac,
            pattern_entries,
            entries,
            pattern_scan,
            scan_items,
            literal_atoms,
            regex_set,
            regexes,
            regex_lazy,
            verify: self.verify,
            gates,
            registry: Default::default(),
        })
    }
}

fn valid_lang(l: &str) -> bool {
    l == "any" || ((2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Lower-case a handle and drop a leading `@`.
pub(crate) fn norm_handle(h: &str) -> String {
    h.trim().trim_start_matches('@').to_lowercase()
}

/// Append every set `c` names to `out`.
fn sets_of(c: &Cond, out: &mut Vec<u32>) {
    match c {
        Cond::Set(s) => out.push(*s),
        Cond::Any(ch) | Cond::All(ch) | Cond::None(ch) | Cond::AtLeast(_, ch) => {
            ch.iter().for_each(|k| sets_of(k, out))
        }
        Cond::Near { children, .. } => children.iter().for_each(|k| sets_of(k, out)),
    }
}

/// Sets at least one of which must have been hit for `c` to hold; `None` when `c`
/// can hold with no hit at all.
fn necessary(c: &Cond) -> Option<Vec<u32>> {
    match c {
        Cond::Set(s) => Some(vec![*s]),
        Cond::Any(ch) | Cond::AtLeast(_, ch) => {
            let mut out = Vec::new();
            for k in ch {
                out.extend(necessary(k)?);
            }
            out.sort_unstable();
            out.dedup();
            Some(out)
        }
        Cond::All(ch) | Cond::Near { children: ch, .. } => {
            ch.iter().filter_map(necessary).min_by_key(|v| v.len())
        }
        Cond::None(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a file of 10,000 rules broke serde-saphyr's default node budget.
    #[test]
    fn ten_thousand_rules_in_one_file_compile() {
        let mut text = String::from("category: c\nrules:\n");
        for i in 0..10_000 {
            text.push_str(&format!(
                "  - {{ id: g.{i}, title: t, severity: low, when: {{ near: [{{ terms: [\"w{i}\", \"x{i}\"] }}, {{ terms: [\"y{i}\"] }}], within: 6 }}, unless: [{{ terms: [\"z{i}\"] }}] }}\n"
            ));
        }
        let rs = load_sources(&[Source {
            path: "big.yaml".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rs.rules.len(), 10_000);
    }

    /// `not_overlapping` names lists; an unknown one or the list itself is an error
    /// at its line and column.
    #[test]
    fn not_overlapping_names_are_checked() {
        let text = "kind: lists\nlists:\n  neg:\n    en: [\"not\"]\n    not_overlapping: [neg, nope, fneg]\n  fneg: { en: [\"not only\"] }\n";
        let Err(err) = load_sources(&[Source {
            path: "l.yaml".into(),
            text: text.into(),
        }]) else {
            panic!("unknown and self references are errors");
        };
        let d: Vec<_> = err
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.column, d.message.clone()))
            .collect();
        assert_eq!(
            d,
            [
                (
                    5,
                    23,
                    "list `neg`: `not_overlapping` cannot name the list itself".into()
                ),
                (
                    5,
                    28,
                    "list `neg`: `not_overlapping` names unknown list `nope`".into()
                ),
            ]
        );
    }

    #[test]
    fn term_syntax() {
        let t = |s: &str| parse_term(s).unwrap();
        assert_eq!(
            t("expel*"),
            Term::Literal {
                text: "expel".into(),
                left: true,
                right: false
            }
        );
        assert_eq!(
            t("*كندا"),
            Term::Literal {
                text: "كندا".into(),
                left: false,
                right: true
            }
        );
        assert_eq!(
            t("Persona Non Grata"),
            Term::Literal {
                text: "persona non grata".into(),
                left: true,
                right: true
            }
        );
        assert_eq!(
            t("驱逐"),
            Term::Literal {
                text: "驱逐".into(),
                left: false,
                right: false
            }
        );
        assert_eq!(t("re:sanction(s|ed)"), Term::Regex("sanction(s|ed)".into()));
        // Regexes run on normalised text: their non-ASCII letters are folded the same
        // way (Persian ی → ي, accents stripped, full-width ？ → an escaped ?), ASCII
        // (including escapes like \D) is kept.
        assert_eq!(t("re:\\D تیر"), Term::Regex("\\D تير".into()));
        assert_eq!(t("re:févr(ier)?"), Term::Regex("fevr(ier)?".into()));
        assert_eq!(t("re:吗？$"), Term::Regex("吗\\?$".into()));
        let Term::Regex(re) = t("re:(?:تیر|آذر) [1۱][3۳]\\d\\d") else {
            panic!("a regex term")
        };
        let text = crate::normalize::normalize("۲۶ تیر ۱۳۶۶ و ۳ آذر 1350");
        assert_eq!(
            regex::Regex::new(&re)
                .unwrap()
                .find_iter(text.as_str())
                .count(),
            2
        );
        assert!(
            matches!(parse_term("freeze* assets"), Ok(Term::Wild { anchor, .. }) if anchor == "freeze")
        );
        assert!(parse_term("a*b").is_err(), "literal parts too short");
        assert!(parse_term("*").is_err());
        assert!(parse_term(" x").is_err());
        assert!(parse_term("re:").is_err());
    }
}
