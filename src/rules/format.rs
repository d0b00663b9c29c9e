//! The rule file format as analysts write it: raw serde types, before validation.
//!
//! Every struct denies unknown fields, and every value an error may point at is
//! wrapped in [`Spanned`] so `attache check` can report `file:line:column`.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
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
    /// How many rules the file holds. The rules themselves are read one at a time
    /// by [`for_each_rule`] once every file's lists are known, so a file of 10,000
    /// rules is never held as one raw tree.
    #[serde(default)]
    pub rules: RuleCount,
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

/// The number of entries of a file's `rules:` sequence, read without keeping them.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuleCount(pub usize);

impl<'de> Deserialize<'de> for RuleCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = RuleCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of rules")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RuleCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(RuleCount(n))
            }
        }
        d.deserialize_seq(Count)
    }
}

/// Deserialize the `rules:` of one YAML file one rule at a time, handing each to
/// `f` (every other key is skipped; the file was already read as a [`RawFile`]).
pub fn for_each_rule(
    text: &str,
    options: serde_saphyr::Options,
    f: &mut dyn FnMut(Spanned<RawRule>),
) -> Result<(), serde_saphyr::Error> {
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |d| {
        RulesOf(f).deserialize(d)
    })
}

/// Seed for a whole file: walks its keys, streams `rules`.
struct RulesOf<'f>(&'f mut dyn FnMut(Spanned<RawRule>));
/// Seed for the `rules:` sequence.
struct RuleSeq<'f>(&'f mut dyn FnMut(Spanned<RawRule>));

impl<'de> DeserializeSeed<'de> for RulesOf<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RulesOf<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a rule file (a mapping)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let f = self.0;
        while let Some(key) = map.next_key::<String>()? {
            if key == "rules" {
                map.next_value_seed(RuleSeq(&mut *f))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for RuleSeq<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RuleSeq<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sequence of rules")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(rule) = seq.next_element::<Spanned<RawRule>>()? {
            (self.0)(rule);
        }
        Ok(())
    }
}
