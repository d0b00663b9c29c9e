//! Decode stage: raw bytes of one message or line → a borrowed canonical [`Post`].
//!
//! Pure: no I/O, logging or metrics. A failure is a [`DecodeError`] whose
//! [`DecodeReason`] is a bounded label for metrics and dead letters.

use std::borrow::Cow;

use serde::Deserialize;

/// Default largest message accepted, in bytes (DESIGN §3: 1 MiB).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// JSON nesting deeper than this is rejected (`too_deep`). Canonical posts nest three
/// levels; platform-native formats fewer than ten.
pub const MAX_DEPTH: usize = 64;

/// One post in the canonical form of DESIGN §3, borrowing from the input where it can.
#[derive(Debug, Clone, Deserialize)]
pub struct Post<'a> {
    /// Platform-unique post id (required).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// `x`, `mastodon`, `bluesky`, `facebook`, `telegram`, `website`, …
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub platform: Option<Cow<'a, str>>,
    /// The posting account; every field may be missing.
    #[serde(borrow, default)]
    pub account: Option<Account<'a>>,
    /// RFC 3339 time of posting (event time), as given.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub created_at: Option<Cow<'a, str>>,
    /// Declared language (often missing or wrong; never relied on for recall).
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub lang: Option<Cow<'a, str>>,
    /// Post body.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub text: Option<Cow<'a, str>>,
    /// Attached images and videos.
    #[serde(borrow, default)]
    pub media: Option<Vec<Media<'a>>>,
    /// Text of a quoted or replied-to post (context, not evidence, by default).
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub quoted_text: Option<Cow<'a, str>>,
    /// Permalink.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub url: Option<Cow<'a, str>>,
}

/// The account that posted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Account<'a> {
    /// The platform's account id (a string or a number in the input).
    #[serde(borrow, default, deserialize_with = "string_or_number")]
    pub id: Option<Cow<'a, str>>,
    /// Handle, with or without a leading `@`.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub handle: Option<Cow<'a, str>>,
    /// Display name.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    /// ISO 3166-1 alpha-2 code of the posting state.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub country: Option<Cow<'a, str>>,
    /// `foreign_ministry`, `embassy`, `head_of_state`, … (DESIGN §3).
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub role: Option<Cow<'a, str>>,
}

/// One attached image or video.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Media<'a> {
    /// `image` or `video`.
    #[serde(borrow, default, rename = "type", deserialize_with = "opt_str")]
    pub kind: Option<Cow<'a, str>>,
    /// Caption shown with the media.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub caption: Option<Cow<'a, str>>,
    /// Accessibility description.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub alt_text: Option<Cow<'a, str>>,
}

/// An optional string field, borrowed from the input unless it holds escapes.
/// (serde's derive borrows a bare `Cow<str>` but copies one inside an `Option`.)
fn opt_str<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    d.deserialize_option(OptStr { numbers: false })
}

/// An account id may be a JSON string or number (platform ids are numeric); numbers
/// are kept as their decimal text.
fn string_or_number<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    d.deserialize_option(OptStr { numbers: true })
}

/// Visitor of an optional string (and, with `numbers`, an integer as its text).
#[derive(Clone, Copy)]
struct OptStr {
    numbers: bool,
}

impl<'de> serde::de::Visitor<'de> for OptStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if self.numbers {
            "a string or an integer"
        } else {
            "a string"
        })
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if !self.numbers {
            return Err(E::invalid_type(serde::de::Unexpected::Unsigned(v), &self));
        }
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if !self.numbers {
            return Err(E::invalid_type(serde::de::Unexpected::Signed(v), &self));
        }
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.numbers {
            d.deserialize_any(self)
        } else {
            d.deserialize_str(self)
        }
    }
}

impl Post<'_> {
    /// The account's country, upper-cased ISO code, if present and non-empty.
    pub fn country(&self) -> Option<&str> {
        self.account
            .as_ref()
            .and_then(|a| a.country.as_deref())
            .filter(|c| !c.is_empty())
    }

    /// Whether the post carries at least one media item.
    pub fn has_media(&self) -> bool {
        self.media.as_ref().is_some_and(|m| !m.is_empty())
    }

    /// Detach from the input buffer.
    pub fn into_owned(self) -> Post<'static> {
        fn o(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        Post {
            id: Cow::Owned(self.id.into_owned()),
            platform: o(self.platform),
            account: self.account.map(|a| Account {
                id: o(a.id),
                handle: o(a.handle),
                name: o(a.name),
                country: o(a.country),
                role: o(a.role),
            }),
            created_at: o(self.created_at),
            lang: o(self.lang),
            text: o(self.text),
            media: self.media.map(|m| {
                m.into_iter()
                    .map(|m| Media {
                        kind: o(m.kind),
                        caption: o(m.caption),
                        alt_text: o(m.alt_text),
                    })
                    .collect()
            }),
            quoted_text: o(self.quoted_text),
            url: o(self.url),
        }
    }
}

/// Why a message could not be decoded. The names are metric labels and appear in
/// dead letters; the set is closed so label cardinality stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeReason {
    /// Larger than the configured limit.
    Oversize,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Not JSON (syntax error, truncated).
    InvalidJson,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// JSON, but a field has the wrong type (or the value is not an object).
    WrongType,
    /// No `id`, or neither `text` nor a media caption / alt text.
    MissingField,
    /// An empty line or message.
    Empty,
}

impl DecodeReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [DecodeReason; 7] = [
        Self::Oversize,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::TooDeep,
        Self::WrongType,
        Self::MissingField,
        Self::Empty,
    ];

    /// Stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::TooDeep => "too_deep",
            Self::WrongType => "wrong_type",
            Self::MissingField => "missing_field",
            Self::Empty => "empty",
        }
    }
}

impl std::fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that could not be decoded, with a human-readable detail.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// Bounded reason label.
    pub reason: DecodeReason,
    /// What exactly was wrong (includes the parser's line/column where it has one).
    pub detail: String,
}

impl DecodeError {
    /// An error with the given reason and detail.
    pub fn new(reason: DecodeReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decode limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Decode one message. Trailing `\r`/`\n` and surrounding whitespace are ignored.
pub fn decode<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Post<'a>, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::new(
            DecodeReason::Oversize,
            format!(
                "{} bytes exceeds the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DecodeError::new(
            DecodeReason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(DecodeError::new(DecodeReason::Empty, "empty message"));
    }
    if too_deep(text.as_bytes(), MAX_DEPTH) {
        return Err(DecodeError::new(
            DecodeReason::TooDeep,
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    if !text.starts_with('{') {
        // Not an object: report nesting first (a deep array is an attack, not a typo).
        let kind = match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Err(e) => return Err(classify(e)),
            Ok(_) => "a JSON value that is not an object",
        };
        return Err(DecodeError::new(
            DecodeReason::WrongType,
            format!("expected a JSON object, got {kind}"),
        ));
    }
    let post: Post<'a> = serde_json::from_str(text).map_err(classify)?;
    if post.id.is_empty() {
        return Err(DecodeError::new(
            DecodeReason::MissingField,
            "`id` is empty",
        ));
    }
    let has_text = post.text.as_deref().is_some_and(|t| !t.is_empty());
    let has_media_text = post.media.as_ref().is_some_and(|m| {
        m.iter().any(|m| {
            m.caption.as_deref().is_some_and(|c| !c.is_empty())
                || m.alt_text.as_deref().is_some_and(|c| !c.is_empty())
        })
    });
    if !has_text && !has_media_text {
        return Err(DecodeError::new(
            DecodeReason::MissingField,
            "neither `text` nor a media caption or alt text",
        ));
    }
    Ok(post)
}

/// Whether arrays and objects nest deeper than `max` (brackets inside strings do not
/// count). Cheap when the message has few brackets, which is nearly always.
fn too_deep(bytes: &[u8], max: usize) -> bool {
    if memchr::memchr2_iter(b'[', b'{', bytes).count() <= max {
        return false;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn classify(e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    let msg = e.to_string();
    let reason = if msg.contains("recursion limit exceeded") {
        DecodeReason::TooDeep
    } else {
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => DecodeReason::InvalidJson,
            Category::Data if msg.starts_with("missing field") => DecodeReason::MissingField,
            Category::Data => DecodeReason::WrongType,
        }
    };
    DecodeError::new(reason, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &[u8]) -> Option<DecodeReason> {
        decode(input, &Limits::default()).err().map(|e| e.reason)
    }

    #[test]
    fn canonical_post_decodes_and_tolerates_unknown_fields() {
        let p = decode(
            br#"{"id":"1","platform":"x","account":{"handle":"KSAmofaEN","country":"SA","role":"foreign_ministry","verified":true},
                "text":"hello","extra":{"a":[1,2,3]},"media":[{"type":"image","caption":"c","width":3}]}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.id, "1");
        assert_eq!(p.country(), Some("SA"));
        assert!(p.has_media());
        assert_eq!(p.media.unwrap()[0].caption.as_deref(), Some("c"));
    }

    #[test]
    fn string_fields_borrow_from_the_input_unless_escaped() {
        // serde's derive copies a `Cow<str>` inside an `Option`: one allocation per
        // field per post on the hot path.
        let p = decode(
            br#"{"id":"1","text":"hello","lang":"en","account":{"handle":"h","id":7,"country":"SA"},
                "media":[{"type":"image","caption":"c"}],"quoted_text":"esc\u00e9"}"#,
            &Limits::default(),
        )
        .unwrap();
        let borrowed = |c: &Option<Cow<'_, str>>| matches!(c, Some(Cow::Borrowed(_)));
        let a = p.account.as_ref().unwrap();
        let m = &p.media.as_ref().unwrap()[0];
        assert!(borrowed(&p.text) && borrowed(&p.lang));
        assert!(
            borrowed(&a.handle)
                && borrowed(&a.country)
                && borrowed(&m.kind)
                && borrowed(&m.caption)
        );
        assert_eq!(a.id.as_deref(), Some("7"));
        assert_eq!(p.quoted_text.as_deref(), Some("escé"));
        assert!(matches!(p.quoted_text, Some(Cow::Owned(_))));
        assert_eq!(
            reason(br#"{"id":"1","text":"t","lang":5}"#),
            Some(DecodeReason::WrongType)
        );
    }

    #[test]
    fn nulls_are_missing_values() {
        let p = decode(
            br#"{"id":"1","text":"t","account":null,"lang":null,"media":null}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(p.account.is_none() && p.lang.is_none() && !p.has_media());
    }

    #[test]
    fn media_caption_alone_is_enough() {
        assert!(decode(
            br#"{"id":"1","media":[{"alt_text":"a map"}]}"#,
            &Limits::default()
        )
        .is_ok());
    }

    #[test]
    fn bad_inputs_have_reasons() {
        let t: &[(&[u8], DecodeReason)] = &[
            (br#"{"id": "bad1", "text": "#, DecodeReason::InvalidJson),
            (b"not json at all", DecodeReason::InvalidJson),
            (br#"{"id": 5, "text": ["x"]}"#, DecodeReason::WrongType),
            (br#"{"id": "5", "text": ["x"]}"#, DecodeReason::WrongType),
            (br#"["id", "text"]"#, DecodeReason::WrongType),
            (
                b"{\"id\": \"b\", \"text\": \"caf\xff\xfe\"}",
                DecodeReason::InvalidUtf8,
            ),
            (br#"{"text": "no id"}"#, DecodeReason::MissingField),
            (br#"{"id": "x"}"#, DecodeReason::MissingField),
            (br#"{"id": "", "text": "t"}"#, DecodeReason::MissingField),
            (b"   \r\n", DecodeReason::Empty),
        ];
        for (input, want) in t {
            assert_eq!(
                reason(input),
                Some(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn deep_nesting_is_too_deep_not_a_crash() {
        let mut s = Vec::new();
        s.extend(std::iter::repeat_n(b'[', 100_000));
        s.extend(std::iter::repeat_n(b']', 100_000));
        assert_eq!(reason(&s), Some(DecodeReason::TooDeep));
        let nested = format!(
            r#"{{"id":"1","text":"t","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(reason(nested.as_bytes()), Some(DecodeReason::TooDeep));
        // Brackets inside strings are text, not nesting.
        let text = format!(r#"{{"id":"1","text":"{}"}}"#, "[".repeat(200));
        assert_eq!(reason(text.as_bytes()), None);
    }

    #[test]
    fn oversize_is_rejected_before_parsing() {
        let limits = Limits { max_bytes: 10 };
        let e = decode(br#"{"id":"1","text":"long enough"}"#, &limits).unwrap_err();
        assert_eq!(e.reason, DecodeReason::Oversize);
    }

    #[test]
    fn escaped_strings_decode() {
        let p = decode(
            br#"{"id":"1","text":"caf\u00e9 \"q\""}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.text.as_deref(), Some("café \"q\""));
    }
}
