//! The account registry: which state, role and tier an official account speaks for.
//!
//! Registry files live beside the rules (`kind: accounts`, e.g. `rules/accounts/*.yaml`)
//! so `attache check rules/` validates them and a reload swaps them with the rules.
//! The registry fills what posts leave out (account country and role) and gives the
//! escalation index the account's tier. Lookups are by platform and handle
//! (case-insensitive, `@` optional) or by platform and numeric account id, and honour
//! each entry's validity interval (a minister's term) against the post's event time.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::decode::Post;
use crate::rules::Diagnostic;

/// How much an account's words weigh in the escalation index, highest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Heads of state and government.
    HeadOfState,
    /// Foreign ministries, ministers and their spokespeople.
    ForeignMinistry,
    /// Embassies, consulates and missions.
    Embassy,
    /// State media, proxies and other accounts.
    StateMedia,
}

impl Tier {
    /// Every tier, highest first.
    pub const ALL: [Tier; 4] = [
        Tier::HeadOfState,
        Tier::ForeignMinistry,
        Tier::Embassy,
        Tier::StateMedia,
    ];

    /// The name used in files, config and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::HeadOfState => "head_of_state",
            Tier::ForeignMinistry => "foreign_ministry",
            Tier::Embassy => "embassy",
            Tier::StateMedia => "state_media",
        }
    }

    /// Parse a tier name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The tier a role implies (DESIGN §3 roles); unknown roles count as state media.
    pub fn of_role(role: &str) -> Self {
        match role {
            "head_of_state" | "head_of_government" => Tier::HeadOfState,
            "foreign_ministry" | "minister" | "spokesperson" => Tier::ForeignMinistry,
            "embassy" | "mission_to_un" | "consulate" => Tier::Embassy,
            _ => Tier::StateMedia,
        }
    }
}

/// Roles a registry entry may have.
pub const ROLES: &[&str] = &[
    "head_of_state",
    "head_of_government",
    "foreign_ministry",
    "minister",
    "spokesperson",
    "embassy",
    "consulate",
    "mission_to_un",
    "state_media",
    "proxy",
    "other",
];

/// One registry entry as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// Platform, lower case (`x`, `mastodon`, `telegram`, `website`, …).
    pub platform: Spanned<String>,
    /// Handle without `@` (case-insensitive).
    #[serde(default)]
    pub handle: Option<Spanned<String>>,
    /// The platform's numeric account id, as a string.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// ISO 3166-1 alpha-2 code of the state the account speaks for.
    pub country: Spanned<String>,
    /// Role (see [`ROLES`]).
    pub role: Spanned<String>,
    /// Override of the tier the role implies.
    #[serde(default)]
    pub tier: Option<Spanned<String>>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// First valid day (inclusive), `YYYY-MM-DD` or RFC 3339.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// End of validity (exclusive), `YYYY-MM-DD` or RFC 3339.
    #[serde(default)]
    pub until: Option<Spanned<String>>,
    /// Free notes for maintainers.
    #[serde(default)]
    pub notes: Option<String>,
}

/// One validated registry entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Platform, lower case.
    pub platform: String,
    /// Handle, lower case, without `@`.
    pub handle: Option<String>,
    /// Numeric account id.
    pub id: Option<String>,
    /// State (ISO alpha-2).
    pub country: String,
    /// Role.
    pub role: String,
    /// Tier.
    pub tier: Tier,
    /// Display name.
    pub name: Option<String>,
    /// Valid from (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Valid until (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Where it was defined (`file:line`).
    pub defined_at: String,
}

impl Entry {
    fn valid_at(&self, t: Option<DateTime<Utc>>) -> bool {
        let Some(t) = t else {
            // No event time: only entries without an end are certain to apply.
            return self.until.is_none();
        };
        self.from.is_none_or(|f| t >= f) && self.until.is_none_or(|u| t < u)
    }

    fn overlaps(&self, o: &Entry) -> bool {
        let starts_before_other_ends = match (self.from, o.until) {
            (Some(f), Some(u)) => f < u,
            _ => true,
        };
        let other_starts_before_end = match (o.from, self.until) {
            (Some(f), Some(u)) => f < u,
            _ => true,
        };
        starts_before_other_ends && other_starts_before_end
    }
}

/// The compiled registry.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    entries: Vec<Entry>,
    by_handle: HashMap<(String, String), Vec<usize>>,
    by_id: HashMap<(String, String), Vec<usize>>,
}

/// What the registry says about a post's account.
#[derive(Debug, Clone, Copy)]
pub struct Standing<'r> {
    /// The entry, when the account is registered.
    pub entry: Option<&'r Entry>,
    /// The tier: the entry's, or the role's when unregistered.
    pub tier: Tier,
}

/// Platform aliases folded to one name.
fn platform_key(p: &str) -> String {
    let p = p.trim().to_ascii_lowercase();
    match p.as_str() {
        "twitter" => "x".into(),
        _ => p,
    }
}

fn handle_key(h: &str) -> String {
    h.trim().trim_start_matches('@').to_lowercase()
}

/// Parse `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_day(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Registry {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry for an account at an instant, if registered.
    pub fn lookup(
        &self,
        platform: &str,
        handle: Option<&str>,
        account_id: Option<&str>,
        at: Option<DateTime<Utc>>,
    ) -> Option<&Entry> {
        let p = platform_key(platform);
        let pick = |ids: Option<&Vec<usize>>| {
            ids.and_then(|v| v.iter().map(|&i| &self.entries[i]).find(|e| e.valid_at(at)))
        };
        if let Some(id) = account_id.filter(|s| !s.is_empty()) {
            if let Some(e) = pick(self.by_id.get(&(p.clone(), id.to_string()))) {
                return Some(e);
            }
        }
        let h = handle.map(handle_key).filter(|h| !h.is_empty())?;
        pick(self.by_handle.get(&(p, h)))
    }

    /// Look the post's account up; fill its missing country and role from the entry.
    /// A country or role the post carries is kept (the feed knows best about itself).
    pub fn enrich<'r>(&'r self, post: &mut Post<'_>) -> Standing<'r> {
        let at = crate::alert::event_time(post);
        let platform = post.platform.as_deref().unwrap_or("");
        let acc = post.account.as_ref();
        let entry = if self.entries.is_empty() {
            None
        } else {
            self.lookup(
                platform,
                acc.and_then(|a| a.handle.as_deref()),
                acc.and_then(|a| a.id.as_deref()),
                at,
            )
        };
        if let Some(e) = entry {
            let a = post.account.get_or_insert_with(Default::default);
            if a.country.as_deref().is_none_or(str::is_empty) {
                a.country = Some(e.country.clone().into());
            }
            if a.role.as_deref().is_none_or(str::is_empty) {
                a.role = Some(e.role.clone().into());
            }
        }
        let tier = match entry {
            Some(e) => e.tier,
            None => post
                .account
                .as_ref()
                .and_then(|a| a.role.as_deref())
                .map(Tier::of_role)
                .unwrap_or(Tier::StateMedia),
        };
        Standing { entry, tier }
    }

    /// Validate one file's entries and add them; problems go to `diags`.
    pub(crate) fn add_file(
        &mut self,
        path: &Path,
        raw: &[Spanned<RawAccount>],
        diags: &mut Vec<Diagnostic>,
    ) {
        let at = |line: u64, column: u64, message: String| Diagnostic {
            file: path.to_path_buf(),
            line,
            column,
            message,
        };
        let pos = |s: &serde_saphyr::Location| (s.line(), s.column());
        for r in raw {
            let a = &r.value;
            let (l, c) = pos(&r.referenced);
            let before = diags.len();
            let platform = platform_key(&a.platform.value);
            if platform.is_empty()
                || !platform
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                let (l, c) = pos(&a.platform.referenced);
                diags.push(at(l, c, format!("platform `{}` is not a lower-case platform name (x, mastodon, telegram, website, …)", a.platform.value)));
            }
            let handle = a.handle.as_ref().map(|h| handle_key(&h.value));
            let id = a.id.as_ref().map(|i| i.value.trim().to_string());
            if handle.as_deref().is_none_or(str::is_empty)
                && id.as_deref().is_none_or(str::is_empty)
            {
                diags.push(at(l, c, "an account needs a `handle` or an `id`".into()));
            }
            let country = a.country.value.trim();
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                let (l, c) = pos(&a.country.referenced);
                diags.push(at(
                    l,
                    c,
                    format!("country `{country}` is not an upper-case ISO 3166-1 alpha-2 code"),
                ));
            }
            let role = a.role.value.trim();
            if !ROLES.contains(&role) {
                let (l, c) = pos(&a.role.referenced);
                diags.push(at(
                    l,
                    c,
                    format!(
                        "unknown role `{role}` (expected one of: {})",
                        ROLES.join(", ")
                    ),
                ));
            }
            let tier = match &a.tier {
                None => Tier::of_role(role),
                Some(t) => Tier::parse(t.value.trim()).unwrap_or_else(|| {
                    let (l, c) = pos(&t.referenced);
                    diags.push(at(l, c, format!("unknown tier `{}` (expected head_of_state, foreign_ministry, embassy or state_media)", t.value)));
                    Tier::StateMedia
                }),
            };
            let mut day = |d: &Option<Spanned<String>>| {
                d.as_ref().and_then(|d| {
                    let t = parse_day(d.value.trim());
                    if t.is_none() {
                        let (l, c) = pos(&d.referenced);
                        diags.push(at(
                            l,
                            c,
                            format!("`{}` is not a date (YYYY-MM-DD or RFC 3339)", d.value),
                        ));
                    }
                    t
                })
            };
            let (from, until) = (day(&a.from), day(&a.until));
            if let (Some(f), Some(u)) = (from, until) {
                if f >= u {
                    diags.push(at(l, c, "`from` must be before `until`".into()));
                }
            }
            if diags.len() > before {
                continue;
            }
            let e = Entry {
                platform: platform.clone(),
                handle: handle.filter(|h| !h.is_empty()),
                id: id.filter(|i| !i.is_empty()),
                country: country.to_string(),
                role: role.to_string(),
                tier,
                name: a.name.clone(),
                from,
                until,
                defined_at: format!("{}:{l}", path.display()),
            };
            // The same account twice with overlapping validity is ambiguous.
            let clash = |map: &HashMap<(String, String), Vec<usize>>, key: Option<&String>| {
                key.and_then(|k| map.get(&(platform.clone(), k.clone())))
                    .and_then(|v| v.iter().map(|&i| &self.entries[i]).find(|o| o.overlaps(&e)))
                    .map(|o| o.defined_at.clone())
            };
            if let Some(first) = clash(&self.by_handle, e.handle.as_ref())
                .or_else(|| clash(&self.by_id, e.id.as_ref()))
            {
                diags.push(at(l, c, format!("account {platform}:{} is already registered for an overlapping period at {first}", e.handle.as_deref().or(e.id.as_deref()).unwrap_or(""))));
                continue;
            }
            let i = self.entries.len();
            if let Some(h) = &e.handle {
                self.by_handle
                    .entry((platform.clone(), h.clone()))
                    .or_default()
                    .push(i);
            }
            if let Some(id) = &e.id {
                self.by_id
                    .entry((platform.clone(), id.clone()))
                    .or_default()
                    .push(i);
            }
            self.entries.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> (Registry, Vec<Diagnostic>) {
        #[derive(Deserialize)]
        struct F {
            accounts: Vec<Spanned<RawAccount>>,
        }
        let f: F = serde_saphyr::from_str(yaml).expect("yaml");
        let mut r = Registry::default();
        let mut d = Vec::new();
        r.add_file(Path::new("acc.yaml"), &f.accounts, &mut d);
        (r, d)
    }

    fn post(json: &str) -> Post<'_> {
        crate::decode::decode(json.as_bytes(), &crate::decode::Limits::default()).expect("post")
    }

    const YAML: &str = "accounts:
  - { platform: x, handle: '@KSAmofaEN', country: SA, role: foreign_ministry }
  - { platform: twitter, id: '123', country: CA, role: embassy }
  - { platform: x, handle: SecState, country: US, role: minister, from: 2021-01-26, until: 2025-01-20 }
  - { platform: x, handle: SecState, country: US, role: minister, from: 2025-01-20 }
  - { platform: x, handle: leaders_proxy, country: SA, role: other, tier: embassy }
";

    #[test]
    fn lookup_by_handle_id_platform_alias_and_term() {
        let (r, d) = load(YAML);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(r.len(), 5);
        let t = |s: &str| parse_day(s);
        assert_eq!(
            r.lookup("X", Some("ksamofaen"), None, None)
                .map(|e| e.country.as_str()),
            Some("SA")
        );
        assert_eq!(
            r.lookup("x", Some("@KSAMOFAEN"), None, None)
                .map(|e| e.tier),
            Some(Tier::ForeignMinistry)
        );
        assert_eq!(
            r.lookup("x", None, Some("123"), None)
                .map(|e| e.country.as_str()),
            Some("CA")
        );
        assert!(r
            .lookup("mastodon", Some("ksamofaen"), None, None)
            .is_none());
        let term1 = r
            .lookup("x", Some("secstate"), None, t("2022-05-01"))
            .map(|e| e.defined_at.clone());
        let term2 = r
            .lookup("x", Some("secstate"), None, t("2025-03-01"))
            .map(|e| e.defined_at.clone());
        assert!(
            term1.as_deref().is_some_and(|s| s.ends_with(":4")),
            "{term1:?}"
        );
        assert!(
            term2.as_deref().is_some_and(|s| s.ends_with(":5")),
            "{term2:?}"
        );
        assert!(r
            .lookup("x", Some("secstate"), None, t("2020-01-01"))
            .is_none());
        // Without an event time only the open-ended entry is certain.
        assert!(r
            .lookup("x", Some("secstate"), None, None)
            .is_some_and(|e| e.from.is_some() && e.until.is_none()));
        assert_eq!(
            r.lookup("x", Some("leaders_proxy"), None, None)
                .map(|e| e.tier),
            Some(Tier::Embassy)
        );
    }

    #[test]
    fn enrich_fills_only_missing_fields() {
        let (r, _) = load(YAML);
        let mut p =
            post(r#"{"id":"1","platform":"x","account":{"handle":"KSAmofaEN"},"text":"t"}"#);
        let s = r.enrich(&mut p);
        assert_eq!(p.country(), Some("SA"));
        assert_eq!(
            p.account.as_ref().and_then(|a| a.role.as_deref()),
            Some("foreign_ministry")
        );
        assert!(s.entry.is_some());
        let mut p = post(
            r#"{"id":"1","platform":"x","account":{"handle":"KSAmofaEN","country":"AE","role":"embassy"},"text":"t"}"#,
        );
        r.enrich(&mut p);
        assert_eq!(p.country(), Some("AE"));
        let mut p = post(
            r#"{"id":"1","platform":"x","account":{"handle":"nobody","role":"head_of_state"},"text":"t"}"#,
        );
        let s = r.enrich(&mut p);
        assert!(s.entry.is_none());
        assert_eq!(s.tier, Tier::HeadOfState);
        assert_eq!(p.country(), None);
        let mut p = post(r#"{"id":"1","platform":"x","account":{"id":123},"text":"t"}"#);
        r.enrich(&mut p);
        assert_eq!(p.country(), Some("CA"));
    }

    #[test]
    fn errors_point_at_the_field() {
        let (_, d) = load(
            "accounts:
  - { platform: x, country: SA, role: foreign_ministry }
  - { platform: x, handle: a, country: Saudi, role: foreign_ministry }
  - { platform: x, handle: b, country: SA, role: king }
  - { platform: x, handle: c, country: SA, role: other, tier: top }
  - { platform: x, handle: d, country: SA, role: other, from: yesterday }
  - { platform: x, handle: e, country: SA, role: other, from: 2020-01-01, until: 2019-01-01 }
  - { platform: x, handle: f, country: SA, role: other }
  - { platform: x, handle: '@F', country: SA, role: other, from: 2020-01-01 }
",
        );
        let msgs: Vec<String> = d
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        assert_eq!(msgs.len(), 7, "{msgs:#?}");
        assert!(msgs[0].starts_with("2:5 an account needs"), "{msgs:#?}");
        assert!(msgs[1].starts_with("3:40 country `Saudi`"), "{msgs:#?}");
        assert!(msgs[2].contains("unknown role `king`"), "{msgs:#?}");
        assert!(msgs[3].contains("unknown tier `top`"), "{msgs:#?}");
        assert!(msgs[4].contains("`yesterday` is not a date"), "{msgs:#?}");
        assert!(
            msgs[5].contains("`from` must be before `until`"),
            "{msgs:#?}"
        );
        assert!(
            msgs[6].starts_with("9:5 account x:f is already registered")
                && msgs[6].contains("acc.yaml:8"),
            "{msgs:#?}"
        );
    }
}
