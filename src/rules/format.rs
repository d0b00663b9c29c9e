//! The rule file format as analysts write it: raw serde types, before validation.
//!
//! Every struct denies unknown fields, and every value an error may point at is
//! wrapped in [`Spanned`] so `attache check` can report `file:line:column`.

use std::collections::BTreeMap;

use serde::Deserialize;
pub use serde_saphyr::Spanned;

/// One YAML file under `rules/` (rules, shared lists, or countries).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `rules` (the default), `lists`, `countries` or `accounts`.
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    /// Default category of the rules in this file.
    #[serde(default)]
    pub category: Option<Box<Spanned<String>>>,
    /// Free text about the file (definitions of the category).
    #[serde(default)]
    pub description: Option<String>,
    /// Named term lists, per language; visible to every rule file.
    #[serde(default)]
    pub lists: BTreeMap<String, Spanned<RawList>>,
    /// Countries: ISO code → per-language names, demonyms, capitals, metonyms.
    #[serde(default)]
    pub countries: BTreeMap<String, Spanned<RawList>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// Account registry entries (`kind: accounts`).
    #[serde(default)]
    pub accounts: Vec<Spanned<crate::registry::RawAccount>>,
}

/// A term list: language code (`en`, `fr`, …, or `any`) → terms.
pub type RawList = BTreeMap<String, Vec<Spanned<String>>>;

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique, stable id (`png.expel_envoy`).
    pub id: Spanned<String>,
    /// One-line title shown in alerts.
    pub title: String,
    /// Longer description.
    #[serde(default)]
    pub description: Option<String>,
    /// Category; defaults to the file's `category`.
    #[serde(default)]
    pub category: Option<Box<Spanned<String>>>,
    /// info, low, medium, high or critical.
    pub severity: Spanned<String>,
    /// Contribution to the escalation index (default by severity).
    #[serde(default)]
    pub score: Option<Box<Spanned<f64>>>,
    /// Free tags copied into alerts.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Links to sources and definitions.
    #[serde(default)]
    pub references: Vec<String>,
    /// A disabled rule is compiled and checked but never fires.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Fields searched: text, media (caption and alt text), caption, alt_text, quoted_text.
    #[serde(default)]
    pub fields: Option<Vec<Spanned<String>>>,
    /// Fire only on posts that carry an image or video.
    #[serde(default)]
    pub requires_media: bool,
    /// Account and language filters.
    #[serde(default)]
    pub accounts: Option<Box<RawAccounts>>,
    /// The condition.
    pub when: Box<Spanned<RawCond>>,
    /// Exceptions: any that holds in its scope suppresses the match.
    #[serde(default)]
    pub unless: Vec<Spanned<RawCond>>,
    /// Posts that must and must not match; run by `attache test`.
    #[serde(default)]
    pub examples: Option<Box<RawExamples>>,
}

/// Account filters. A post whose field is missing passes unless `strict` is set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounts {
    /// Allowed roles.
    #[serde(default)]
    pub roles: Option<Vec<Spanned<String>>>,
    /// Excluded roles.
    #[serde(default)]
    pub not_roles: Option<Vec<Spanned<String>>>,
    /// Allowed account countries (ISO alpha-2).
    #[serde(default)]
    pub countries: Option<Vec<Spanned<String>>>,
    /// Excluded account countries.
    #[serde(default)]
    pub not_countries: Option<Vec<Spanned<String>>>,
    /// Allowed handles (case-insensitive, `@` optional).
    #[serde(default)]
    pub handles: Option<Vec<Spanned<String>>>,
    /// Excluded handles.
    #[serde(default)]
    pub not_handles: Option<Vec<Spanned<String>>>,
    /// Allowed declared languages.
    #[serde(default)]
    pub langs: Option<Vec<Spanned<String>>>,
    /// Reject posts whose filtered field is missing instead of letting them pass.
    #[serde(default)]
    pub strict: bool,
}

/// A condition. Exactly one operator key (`list`, `term`, `terms`, `regex`, `any`,
/// `all`, `none`, `at_least`+`of`, `near`) must be present; `within`, `sentence`,
/// `scope` and `distance` qualify it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCond {
    /// A named list (from any file).
    #[serde(default)]
    pub list: Option<Box<Spanned<String>>>,
    /// One inline term.
    #[serde(default)]
    pub term: Option<Box<Spanned<String>>>,
    /// Inline terms (language-neutral).
    #[serde(default)]
    pub terms: Option<Vec<Spanned<String>>>,
    /// One inline regex term, matched on normalised text.
    #[serde(default)]
    pub regex: Option<Box<Spanned<String>>>,
    /// At least one child holds.
    #[serde(default)]
    pub any: Option<Vec<Spanned<RawCond>>>,
    /// Every child holds.
    #[serde(default)]
    pub all: Option<Vec<Spanned<RawCond>>>,
    /// No child holds.
    #[serde(default)]
    pub none: Option<Vec<Spanned<RawCond>>>,
    /// At least N of `of` hold.
    #[serde(default)]
    pub at_least: Option<Box<Spanned<u32>>>,
    /// The children of `at_least`.
    #[serde(default)]
    pub of: Option<Vec<Spanned<RawCond>>>,
    /// Every child holds, close together (`within` tokens and/or the same `sentence`).
    #[serde(default)]
    pub near: Option<Vec<Spanned<RawCond>>>,
    /// For `near`: at most this many tokens between the children.
    #[serde(default)]
    pub within: Option<Box<Spanned<u32>>>,
    /// For `near`: the children must be in one sentence.
    #[serde(default)]
    pub sentence: Option<bool>,
    /// For an `unless` entry: `sentence` (default), `field` or `post`.
    #[serde(default)]
    pub scope: Option<Box<Spanned<String>>>,
    /// For an `unless` entry: holds only within this many tokens of the match.
    #[serde(default)]
    pub distance: Option<Box<Spanned<u32>>>,
}

/// Examples embedded in a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExamples {
    /// Posts the rule must fire on.
    #[serde(default, rename = "match")]
    pub matches: Vec<Spanned<RawExample>>,
    /// Posts the rule must not fire on.
    #[serde(default)]
    pub no_match: Vec<Spanned<RawExample>>,
}

/// An example: a bare text, or a whole post (account, media, …).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawExample {
    /// Just the post text.
    Text(String),
    /// A post in the canonical form; `id` may be omitted.
    Post(serde_json::Map<String, serde_json::Value>),
}
