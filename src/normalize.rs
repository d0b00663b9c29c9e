//! Text normalisation shared by rule terms and post text, with a byte-offset map back to the original.
//!
//! Both sides of matching (rule terms and published posts) go through [`normalize`] /
//! [`normalize_into`], so they agree on one folded form. Matching then runs on
//! [`Normalized::as_str`], and evidence spans found there are mapped back to byte offsets of
//! the original text with [`Normalized::original_range`].
//!
//! # Order of the folding steps
//!
//! The steps run as four stages; each stage works on the output of the one before.
//!
//! **Stage 1: per character** (a plain byte loop for runs of ASCII):
//! 1. Remove format characters (general category Cf: ZWSP, ZWNJ, ZWJ, WJ, BOM, soft hyphen,
//!    bidi marks and isolates, tag characters), variation selectors (U+FE00–FE0F,
//!    U+E0100–E01EF), the Arabic tatweel U+0640, Arabic harakat (U+064B–065F, U+0670), and
//!    the nine Arabic presentation forms whose NFKC is only a tatweel plus harakat (U+FE71,
//!    FE77, FE79, FE7B, FE7D, FE7F, FCF2–FCF4). These go *before* NFKC, so that what they
//!    separated is composed and ordered as if they had never been there.
//! 2. Unicode NFKC, applied per segment: a segment starts at a character that cannot interact
//!    with anything before it (canonical combining class 0 and NFKC quick-check Yes, or a
//!    compatibility decomposition that begins with such a character, like full-width letters)
//!    and runs up to the next such character. Every output character of a segment maps to the
//!    whole segment in the original.
//! 3. On each NFKC output character:
//!    - drop harakat that NFKC produced from presentation forms;
//!    - Arabic letters: أ إ آ ٱ → ا, ى → ي, ی → ي, ئ → ي, ک → ك, ة → ه, ؤ → و, and the other
//!      letters with hamza above to their base (ۀ → ە, ۂ → ہ, ۓ → ے);
//!      Arabic-Indic and extended Arabic-Indic digits → ASCII digits;
//!    - traditional Chinese characters → simplified (`國` → `国`, `戰` → `战`);
//!    - punctuation: ’ ‘ ‛ ʼ ′ \` → `'`; “ ” „ ‟ « » → `"`; ‐ ‑ ‒ – — ― − → `-`;
//!    - whitespace: a line break (`\n`, `\r`, U+0085, U+2028, U+2029) becomes `\n`, any other
//!      whitespace `' '` (NFKC has already turned NBSP, U+2000–200A, U+3000 … into spaces);
//!    - case: lowercase, with İ → i, ı → i, ß and ẞ → ss, ς → σ;
//!    - diacritics: a Latin, Greek or Cyrillic letter is canonically decomposed and its marks
//!      dropped (é → e, ё → е, ά → α), except Cyrillic й; any combining mark that follows a
//!      Latin, Greek or Cyrillic letter is dropped as well. Marks on other scripts (Devanagari,
//!      Thai, kana …) are kept.
//!
//! **Stage 2: hashtags** (only when the text holds a `#`). A `#` that starts a hashtag — it is
//! at the start of the text or after a character that is neither `#` nor a word character, and
//! it is followed by a letter or digit — is dropped. Inside the hashtag body (letters, digits,
//! marks, and underscores that are followed by a letter or digit) each underscore becomes a
//! space and CamelCase is split by inserting a space before an upper-case letter that follows
//! a lower-case one, or that follows an upper-case letter or digit and is followed by a
//! lower-case one: `#PersonaNonGrata` → `persona non grata`, `#NATOSummit` → `nato summit`,
//! `#G20` → `g20`. Inserted spaces map to an empty range of the original. `@mentions` are not
//! touched.
//!
//! **Stage 3: whitespace and letter spacing.** Tokens are the runs between whitespace. A
//! maximal run of three or more single-letter tokens (one Latin, Greek, Cyrillic or Arabic
//! letter each) whose gaps hold no line break is joined: a one-character gap is dropped, a gap
//! of two or more characters is a word break (`p e r s o n a  n o n  g r a t a` →
//! `persona non grata`). Then every other run of whitespace becomes one `' '`, or one `'\n'`
//! when it holds a line break; leading and trailing whitespace is trimmed.
//!
//! **Stage 4: look-alike letters.** In each word (maximal run of letters and marks), letters
//! that are not look-alikes are counted per script (Latin, Cyrillic, Greek). If one script has
//! strictly the most, look-alike letters of the other two scripts are replaced by their
//! counterpart in it (`ѕаnсtіоns` → `sanctions`, `cанкции` → `санкции`,
//! `ΡΕRSONA` → `persona`). A word with no such letter, or a tie, is left alone.
//!
//! CJK, kana, Hangul and Thai pass through (after NFKC and lowercasing) with no spaces
//! inserted; traditional Chinese characters are folded to simplified ones, one character
//! for one (`國際制裁` → `国际制裁`; OpenCC's table, see `normalize/hant.rs`), so that one
//! term serves Beijing, Taipei and Hong Kong.
//!
//! # Properties
//!
//! The result is idempotent: normalising a normalised text changes nothing. To guarantee that,
//! two rules are a little wider than the plain description:
//! - letter spacing treats *any* maximal run of ≥ 3 single-letter tokens (gaps without line
//!   breaks) as spaced, and joins three or more consecutive one-letter pieces that a double-gap
//!   split would leave (`a  b  c` → `abc`), because the collapsed output `a b c` would
//!   otherwise be joined on a second pass;
//! - a `#` directly after a word character or after another `#` is not a hashtag
//!   (`##Tag` stays `##tag`), and trailing underscores are not part of a hashtag body.
//!
//! # Implementation notes
//!
//! - Offsets are stored in 31 bits; for inputs longer than 2 GiB they saturate.
//! - [`Normalized`] keeps, per byte of normalised text, one 8-byte entry (original start and
//!   end), plus a scratch buffer of the same shape that the stages swap with.
//! - The Unicode property lookups cost tens of nanoseconds each, so their results are cached
//!   per code point in a lazily filled static table (272 KiB, the BMP and U+1F000–1FFFF).
//! - Runs of plain ASCII, and runs of characters that fold to themselves, are copied in bulk;
//!   stage 3 first checks eight bytes at a time whether it has anything to do, and stage 4
//!   runs only when stage 1 saw a word that mixes scripts (or stage 3 joined letters).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use smallvec::SmallVec;
use unicode_normalization::char::{
    canonical_combining_class, decompose_canonical, decompose_compatible, is_combining_mark,
};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// The normalised form of one text, with a map back to the original's byte offsets.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// The result: normalised text plus, per byte, the original span.
    buf: Buf,
    /// Scratch space for the stages, kept to reuse its allocations.
    tmp: Buf,
}

impl Normalized {
    /// An empty value, to be filled (and refilled) by [`normalize_into`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.buf.text
    }

    /// Byte range in the original text that produced normalised bytes `start..end`.
    ///
    /// `start`/`end` are char boundaries of the normalised text (start <= end <= len).
    /// The result lies on char boundaries of the original, start <= end, and covers every
    /// original char that contributed to any normalised char in the range. Out-of-range
    /// arguments are clamped; an empty range maps to an empty range at the matching position.
    pub fn original_range(&self, start: usize, end: usize) -> Range<usize> {
        let b = &self.buf;
        let len = b.text.len();
        let end = end.min(len);
        let start = start.min(end);
        if start < end {
            let s = b.span(start).0 as usize;
            let e = b.span(end - 1).1 as usize;
            s..e.max(s)
        } else {
            let p = if start < len {
                b.span(start).0
            } else {
                b.last_end().unwrap_or(0)
            } as usize;
            p..p
        }
    }
}

/// Normalise `input` into `out`, reusing its allocations (hot path: called for every post field).
pub fn normalize_into(input: &str, out: &mut Normalized) {
    let Normalized { buf, tmp } = out;
    tmp.clear();
    tmp.reserve(input.len());
    let seen = stage_fold(input, tmp);
    if memchr::memchr(b'#', tmp.text.as_bytes()).is_some() {
        buf.clear();
        buf.reserve(tmp.text.len() + 8);
        stage_hashtags(tmp, buf, input.as_bytes());
        std::mem::swap(buf, tmp);
    }
    buf.clear();
    let (changed, joined) = stage_spacing(tmp, buf);
    if !changed {
        std::mem::swap(buf, tmp);
    }
    let mut closed = false;
    if memchr::memchr(b' ', buf.text.as_bytes()).is_some() && !buf.text.is_ascii() {
        tmp.clear();
        if stage_unspaced_gaps(buf, tmp) {
            std::mem::swap(buf, tmp);
            closed = true;
        }
    }
    // Only a word with letters of two scripts can change in stage 4; such a word either
    // came out of stage 1 or was joined in stage 3 (spaced letters) or 3b (a closed gap).
    if seen.mixed_word || ((joined || closed) && seen.has_cyrillic_or_greek) {
        tmp.clear();
        if stage_confusables(buf, tmp) {
            std::mem::swap(buf, tmp);
        }
    }
}

/// Normalise `input` (convenience wrapper around [`normalize_into`]).
pub fn normalize(input: &str) -> Normalized {
    let mut n = Normalized::new();
    normalize_into(input, &mut n);
    n
}

// ---------------------------------------------------------------------------------------------
// Buffer: text plus, for every byte, the original span of the char it belongs to.

#[derive(Debug, Clone, Default)]
struct Buf {
    text: String,
    /// One entry per byte of `text`.
    map: Vec<Span>,
}

/// The original byte range of the char a byte belongs to, and whether that char was upper
/// case before lowercasing (the top bit of `start`).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

const UPPER_BIT: u32 = 1 << 31;
const OFFSET_MAX: u32 = UPPER_BIT - 1;

impl Span {
    fn new(start: u32, end: u32, upper: bool) -> Self {
        Span {
            start: start | if upper { UPPER_BIT } else { 0 },
            end,
        }
    }
    fn start(self) -> u32 {
        self.start & OFFSET_MAX
    }
    fn upper(self) -> bool {
        self.start & UPPER_BIT != 0
    }
}

/// An original byte offset as stored (saturating past 2 GiB).
fn off(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(OFFSET_MAX).min(OFFSET_MAX)
}

impl Buf {
    fn clear(&mut self) {
        self.text.clear();
        self.map.clear();
    }

    fn reserve(&mut self, n: usize) {
        self.text.reserve(n);
        self.map.reserve(n);
    }

    #[inline]
    fn push_char(&mut self, c: char, start: u32, end: u32, upper: bool) {
        let span = Span::new(start, end, upper);
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.map.push(span);
        }
    }

    /// Append an ASCII run of the original starting at byte `base`, lowercased. The upper-case
    /// bit is left clear: for a one-byte span the original byte tells (see [`Buf::upper_at`]).
    fn push_ascii(&mut self, run: &str, base: usize) {
        let at = self.text.len();
        self.text.push_str(run);
        if let Some(s) = self.text.get_mut(at..) {
            s.make_ascii_lowercase();
        }
        let n = run.len();
        if base + n < OFFSET_MAX as usize {
            let b = base as u32;
            self.map.extend((b..b + n as u32).map(|x| Span {
                start: x,
                end: x + 1,
            }));
        } else {
            self.map
                .extend((0..n).map(|k| Span::new(off(base + k), off(base + k + 1), false)));
        }
    }

    /// Append bytes `a..b` of `src` (char boundaries) with their spans.
    fn copy_from(&mut self, src: &Buf, a: usize, b: usize) {
        if a >= b {
            return;
        }
        if let (Some(t), Some(m)) = (src.text.get(a..b), src.map.get(a..b)) {
            self.text.push_str(t);
            self.map.extend_from_slice(m);
        } else {
            debug_assert!(false, "copy_from off char boundary");
        }
    }

    fn span(&self, p: usize) -> (u32, u32) {
        self.map.get(p).map_or((0, 0), |s| (s.start(), s.end))
    }

    /// Whether the char at `p` was upper case in `original`, the text the spans refer to.
    fn upper_at(&self, p: usize, original: &[u8]) -> bool {
        self.map.get(p).is_some_and(|s| {
            s.upper()
                || (s.end == s.start() + 1
                    && original
                        .get(s.start() as usize)
                        .is_some_and(u8::is_ascii_uppercase))
        })
    }

    fn last_end(&self) -> Option<u32> {
        self.map.last().map(|s| s.end)
    }
}

// ---------------------------------------------------------------------------------------------
// Character tables shared by the stages (and the reference implementation in the tests).

/// Characters removed before NFKC (and again after it): format characters (Cf), variation
/// selectors, tatweel, harakat, and the presentation forms whose NFKC is a tatweel plus harakat
/// only. Harakat go before NFKC because a removed mark can otherwise unblock a composition
/// (Hangul jamo, for one) that would only happen on a second pass.
fn is_removable(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x64B..=0x65F
            | 0x670
            | 0x61C
            | 0x640
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xFCF2..=0xFCF4
            | 0xFE00..=0xFE0F
            | 0xFE71
            | 0xFE77
            | 0xFE79
            | 0xFE7B
            | 0xFE7D
            | 0xFE7F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xE0100..=0xE01EF
    )
}

mod hant;

/// One-to-one folds applied after NFKC: Arabic letters and digits, punctuation variants,
/// traditional Chinese characters.
fn simple_map(c: char) -> Option<char> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{02BC}' | '\u{2032}' | '`' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        '\u{0622}' | '\u{0623}' | '\u{0625}' | '\u{0671}' => '\u{0627}',
        '\u{0649}' | '\u{06CC}' | '\u{0626}' => '\u{064A}',
        '\u{06A9}' => '\u{0643}',
        '\u{0629}' => '\u{0647}',
        // The other letters with hamza above: drop it, as for harakat.
        '\u{06C0}' => '\u{06D5}',
        '\u{06C2}' => '\u{06C1}',
        '\u{06D3}' => '\u{06D2}',
        '\u{0624}' => '\u{0648}',
        '\u{0660}'..='\u{0669}' => char::from(b'0' + (c as u32 - 0x660) as u8),
        '\u{06F0}'..='\u{06F9}' => char::from(b'0' + (c as u32 - 0x6F0) as u8),
        // Traditional Chinese characters (Taiwan, Hong Kong, Macau) to simplified.
        '\u{3400}'..='\u{9FFF}' | '\u{20000}'..='\u{3FFFF}' => {
            let i = hant::T2S.binary_search_by_key(&c, |&(t, _)| t).ok()?;
            hant::T2S[i].1
        }
        _ => return None,
    })
}

/// Characters of scripts written without spaces between words (Chinese, Japanese,
/// Thai, Lao, Khmer, Myanmar): terms in them match without word boundaries and each
/// such character is one token.
pub fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF     // Thai, Lao
        | 0x1000..=0x109F   // Myanmar
        | 0x1780..=0x17FF   // Khmer
        | 0x2E80..=0x2FDF   // CJK radicals
        | 0x3000..=0x303F   // CJK symbols and punctuation
        | 0x3040..=0x30FF   // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana extensions
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0xFF66..=0xFF9F   // half-width Katakana
        | 0x20000..=0x2FA1F // CJK extensions B–F
    )
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    Latin = 0,
    Cyrillic = 1,
    Greek = 2,
    Other = 3,
}

/// The script of a letter (Latin, Greek, Cyrillic), or `Other` for anything else, including
/// marks and non-letters.
fn letter_script(c: char) -> Script {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Script::Latin
        } else {
            Script::Other
        };
    }
    let s = match c as u32 {
        0xC0..=0x24F
        | 0x250..=0x2AF
        | 0x1E00..=0x1EFF
        | 0x2C60..=0x2C7F
        | 0xA720..=0xA7FF
        | 0xAB30..=0xAB6F => Script::Latin,
        0x370..=0x3E1 | 0x3F0..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
        0x400..=0x52F | 0x1C80..=0x1C8F | 0xA640..=0xA69F => Script::Cyrillic,
        _ => return Script::Other,
    };
    if c.is_alphabetic() && !is_mark(c) {
        s
    } else {
        Script::Other
    }
}

/// A letter that letter spacing may join: Latin, Greek, Cyrillic or Arabic.
fn is_spacing_letter(c: char) -> bool {
    if letter_script(c) != Script::Other {
        return true;
    }
    matches!(c as u32, 0x600..=0x6FF | 0x750..=0x77F | 0x8A0..=0x8FF)
        && c.is_alphabetic()
        && !is_mark(c)
}

/// A combining mark (general category M).
fn is_mark(c: char) -> bool {
    !c.is_ascii() && is_combining_mark(c)
}

/// A character that belongs to a word for hashtag purposes.
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        c.is_alphanumeric() || is_mark(c)
    }
}

/// A character that can start a hashtag body (after the `#`).
fn is_body_start(c: char) -> bool {
    c.is_alphanumeric() && !is_mark(c)
}

/// A character that belongs to a word for the look-alike stage.
fn is_word_letter(c: char) -> bool {
    c.is_alphabetic() || is_mark(c)
}

/// For a look-alike letter, the Latin letter it looks like. `upper` is whether the letter was
/// upper case in the original (Greek Ν looks like N, ν like v).
fn skeleton(c: char, upper: bool) -> Option<char> {
    Some(match c {
        'a' | 'b' | 'c' | 'e' | 'h' | 'i' | 'j' | 'k' | 'm' | 'o' | 'p' | 's' | 't' | 'u' | 'v'
        | 'x' | 'y' => c,
        'а' => 'a',
        'в' => 'b',
        'е' => 'e',
        'к' => 'k',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'і' => 'i',
        'ѕ' => 's',
        'ј' => 'j',
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'η' if upper => 'h',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'μ' => 'm',
        'ν' if upper => 'n',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' if upper => 'y',
        'υ' => 'u',
        'χ' => 'x',
        'ζ' => 'z',
        _ => return None,
    })
}

/// The letter of script `target` that looks like Latin `sk`, if any.
fn lookalike_in(sk: char, target: Script) -> Option<char> {
    match target {
        Script::Latin => Some(sk),
        Script::Cyrillic => Some(match sk {
            'a' => 'а',
            'b' => 'в',
            'c' => 'с',
            'e' => 'е',
            'h' => 'н',
            'i' => 'і',
            'j' => 'ј',
            'k' => 'к',
            'm' => 'м',
            'o' => 'о',
            'p' => 'р',
            's' => 'ѕ',
            't' => 'т',
            'x' => 'х',
            'y' => 'у',
            _ => return None,
        }),
        Script::Greek => Some(match sk {
            'a' => 'α',
            'b' => 'β',
            'e' => 'ε',
            'h' => 'η',
            'i' => 'ι',
            'k' => 'κ',
            'm' => 'μ',
            'o' => 'ο',
            'p' => 'ρ',
            't' => 'τ',
            'u' | 'y' => 'υ',
            'v' => 'ν',
            'x' => 'χ',
            _ => return None,
        }),
        Script::Other => None,
    }
}

/// The script with strictly the most non-look-alike letters, if any.
fn winner(counts: [u32; 3]) -> Option<Script> {
    let [l, c, g] = counts;
    if l > c && l > g {
        Some(Script::Latin)
    } else if c > l && c > g {
        Some(Script::Cyrillic)
    } else if g > l && g > c {
        Some(Script::Greek)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Per-code-point cache: the properties above, computed once per code point on first use
// into a static table of atomics (racing threads store the same value). Covers the BMP and
// U+1F000–1FFFF; other code points are computed each time.

/// The low 21 bits of an entry hold the folded char of an `I_SIMPLE` code point.
const I_CHAR_MASK: u32 = 0x1F_FFFF;
/// For `I_SIMPLE`: the folded char is a word letter ([`is_word_letter`]).
const I_OUT_WORD: u32 = 1 << 21;
/// [`is_safe_start`].
const I_SAFE: u32 = 1 << 22;
/// NFKC leaves the char alone and [`fold_char`] turns it into exactly the char in the low bits,
/// whatever the state.
const I_SIMPLE: u32 = 1 << 23;
/// For `I_SIMPLE`: the upper-case flag of the output.
const I_UPPER: u32 = 1 << 24;
/// For `I_SIMPLE`: [`letter_script`] of the folded char, in two bits.
const I_OUT_SCRIPT_SHIFT: u32 = 25;
/// [`is_removable`].
const I_REMOVABLE: u32 = 1 << 27;
/// [`is_word_letter`].
const I_WORD_LETTER: u32 = 1 << 28;
/// [`is_spacing_letter`].
const I_SPACING: u32 = 1 << 29;
/// [`letter_script`], in the top two bits. A computed entry is never 0: a Latin char (script
/// 0) is a letter, so it has `I_WORD_LETTER`.
const I_SCRIPT_SHIFT: u32 = 30;

const CACHE_LEN: usize = 0x11000;
static CACHE: [AtomicU32; CACHE_LEN] = [const { AtomicU32::new(0) }; CACHE_LEN];

fn compute_info(c: char) -> u32 {
    let mut v = (letter_script(c) as u32) << I_SCRIPT_SHIFT;
    if is_safe_start(c) {
        v |= I_SAFE;
    }
    if is_removable(c) {
        v |= I_REMOVABLE;
    }
    if is_word_letter(c) {
        v |= I_WORD_LETTER;
    }
    if is_spacing_letter(c) {
        v |= I_SPACING;
    }
    if !is_removable(c)
        && !is_mark(c)
        && (c.is_ascii() || is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes)
    {
        let fold_with = |after_lgc| {
            let mut st = FoldState {
                after_lgc,
                has_cyrillic_or_greek: false,
            };
            let mut out = Folded::new();
            fold_char(c, &mut st, &mut out);
            (out, st)
        };
        let (o0, s0) = fold_with(false);
        let (o1, s1) = fold_with(true);
        if let [(f, up)] = o0[..] {
            let fs = letter_script(f);
            let consistent = s0.after_lgc == (fs != Script::Other)
                && s0.has_cyrillic_or_greek == matches!(fs, Script::Cyrillic | Script::Greek);
            if o0 == o1 && s0.after_lgc == s1.after_lgc && consistent {
                v |= I_SIMPLE | f as u32 | ((fs as u32) << I_OUT_SCRIPT_SHIFT);
                if up {
                    v |= I_UPPER;
                }
                if is_word_letter(f) {
                    v |= I_OUT_WORD;
                }
            }
        }
    }
    v
}

/// The cache entry of `c`.
fn info(c: char) -> u32 {
    let cp = c as u32;
    let idx = if cp < 0x10000 {
        cp
    } else if (0x1F000..=0x1FFFF).contains(&cp) {
        cp - 0x1F000 + 0x10000
    } else {
        return compute_info(c);
    };
    let Some(slot) = CACHE.get(idx as usize) else {
        return compute_info(c);
    };
    let v = slot.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let v = compute_info(c);
    slot.store(v, Ordering::Relaxed);
    v
}

/// [`letter_script`], cached.
fn script_of(c: char) -> Script {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Script::Latin
        } else {
            Script::Other
        };
    }
    script_bits(info(c) >> I_SCRIPT_SHIFT)
}

fn script_bits(b: u32) -> Script {
    match b & 3 {
        0 => Script::Latin,
        1 => Script::Cyrillic,
        2 => Script::Greek,
        _ => Script::Other,
    }
}

/// [`is_word_letter`] and [`letter_script`], cached.
fn letter_props(c: char) -> (bool, Script) {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            (true, Script::Latin)
        } else {
            (false, Script::Other)
        };
    }
    let v = info(c);
    (v & I_WORD_LETTER != 0, script_bits(v >> I_SCRIPT_SHIFT))
}

/// [`is_spacing_letter`], cached.
fn spacing_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        info(c) & I_SPACING != 0
    }
}

// Eight bytes at a time, in safe code.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

fn word_at(t: &[u8], p: usize) -> Option<u64> {
    t.get(p..p.checked_add(8)?)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
}

/// The high bit of each byte of `v` that equals `b`.
fn eq_mask(v: u64, b: u8) -> u64 {
    let x = v ^ (LO * u64::from(b));
    !(((x & !HI) + !HI) | x) & HI
}

/// The high bit of each byte of `v` that is below `n` (1 <= n <= 0x80).
fn lt_mask(v: u64, n: u8) -> u64 {
    !(((v & !HI) + LO * u64::from(0x80 - n)) | v) & HI
}

/// The end of the run of plain ASCII bytes starting at `p`.
fn plain_ascii_end(t: &[u8], mut p: usize) -> usize {
    while let Some(v) = word_at(t, p) {
        let m = (v & HI) | lt_mask(v, 0x0E) | eq_mask(v, b'`');
        if m == 0 {
            p += 8;
            continue;
        }
        p += (m.trailing_zeros() / 8) as usize;
        if !t.get(p).is_some_and(|&b| is_plain_ascii(b)) {
            return p;
        }
        p += 1;
    }
    while t.get(p).is_some_and(|&b| is_plain_ascii(b)) {
        p += 1;
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Stage 1: per-character folding.

#[derive(Clone, Copy, Default)]
struct FoldState {
    /// The last emitted base character was a Latin, Greek or Cyrillic letter.
    after_lgc: bool,
    /// Some Cyrillic or Greek letter was emitted.
    has_cyrillic_or_greek: bool,
}

type Folded = SmallVec<[(char, bool); 8]>;

/// ASCII bytes that the bulk loop copies (lowercased); the others go through [`fold_char`].
fn is_plain_ascii(b: u8) -> bool {
    b < 0x80 && !matches!(b, b'\t' | b'\r' | 0x0B | 0x0C | b'`')
}

/// A character that starts a new NFKC segment: nothing before it can change with it. That is
/// a starter that never composes with a preceding character, or a character whose
/// compatibility decomposition begins with such a starter (full-width letters, ligatures).
fn is_safe_start(c: char) -> bool {
    if c.is_ascii() {
        return true;
    }
    if canonical_combining_class(c) != 0 {
        return false;
    }
    match is_nfkc_quick(std::iter::once(c)) {
        IsNormalized::Yes => true,
        IsNormalized::Maybe => false,
        IsNormalized::No => {
            let mut first = None;
            decompose_compatible(c, |d| {
                first.get_or_insert(d);
            });
            first.is_some_and(|f| {
                f.is_ascii()
                    || (canonical_combining_class(f) == 0
                        && is_nfkc_quick(std::iter::once(f)) == IsNormalized::Yes)
            })
        }
    }
}

/// Fold one NFKC output character (steps 3 of stage 1), appending (char, was-upper) pairs.
fn fold_char(c: char, st: &mut FoldState, out: &mut Folded) {
    if c.is_ascii() {
        let b = c as u8;
        let m = match b {
            b'\t' | 0x0B | 0x0C => ' ',
            b'\r' => '\n',
            b'`' => '\'',
            _ => b.to_ascii_lowercase() as char,
        };
        out.push((m, b.is_ascii_uppercase()));
        st.after_lgc = b.is_ascii_alphabetic();
        return;
    }
    if is_removable(c) {
        return;
    }
    if is_mark(c) {
        if !st.after_lgc {
            out.push((c, false));
        }
        return;
    }
    if let Some(m) = simple_map(c) {
        out.push((m, false));
        st.after_lgc = false;
        return;
    }
    if c.is_whitespace() {
        out.push((if is_line_break(c) { '\n' } else { ' ' }, false));
        st.after_lgc = false;
        return;
    }
    let up = c.is_uppercase();
    match c {
        '\u{130}' | '\u{131}' => {
            out.push(('i', up));
            st.after_lgc = true;
            return;
        }
        'ß' | '\u{1E9E}' => {
            out.push(('s', up));
            out.push(('s', up));
            st.after_lgc = true;
            return;
        }
        'ς' => {
            out.push(('σ', false));
            st.after_lgc = true;
            st.has_cyrillic_or_greek = true;
            return;
        }
        _ => {}
    }
    for l in c.to_lowercase() {
        let script = letter_script(l);
        if script == Script::Other {
            out.push((l, up));
            st.after_lgc = false;
            continue;
        }
        st.after_lgc = true;
        if script != Script::Latin {
            st.has_cyrillic_or_greek = true;
        }
        if l == 'й' {
            out.push((l, up));
        } else {
            decompose_canonical(l, |d| {
                if !is_mark(d) {
                    out.push((d, up));
                }
            });
        }
    }
}

/// Fold one NFKC segment.
fn fold_segment(seg: &[char], st: &mut FoldState, out: &mut Folded) {
    out.clear();
    if let [c] = seg {
        if c.is_ascii() || is_nfkc_quick(std::iter::once(*c)) == IsNormalized::Yes {
            fold_char(*c, st, out);
            return;
        }
    }
    for c in seg.iter().copied().nfkc() {
        fold_char(c, st, out);
    }
}

fn next_char(s: &str, i: usize) -> Option<char> {
    s.get(i..).and_then(|t| t.chars().next())
}

/// Decode the char starting at byte `i` of valid UTF-8 (`i` on a char boundary).
#[inline]
fn decode_at(bytes: &[u8], i: usize) -> Option<(char, usize)> {
    let b0 = *bytes.get(i)?;
    if b0 < 0x80 {
        return Some((char::from(b0), 1));
    }
    let (len, mut cp) = if b0 < 0xE0 {
        (2, u32::from(b0 & 0x1F))
    } else if b0 < 0xF0 {
        (3, u32::from(b0 & 0x0F))
    } else {
        (4, u32::from(b0 & 0x07))
    };
    for k in 1..len {
        cp = (cp << 6) | u32::from(*bytes.get(i + k)? & 0x3F);
    }
    char::from_u32(cp).map(|c| (c, len))
}

/// The scripts of the letters in the current word, to spot words that mix Latin, Cyrillic and
/// Greek (only those can change in stage 4).
#[derive(Default)]
struct WordScripts {
    mask: u8,
    mixed: bool,
}

impl WordScripts {
    #[inline]
    fn add(&mut self, is_word_letter: bool, s: Script) {
        if !is_word_letter {
            self.mask = 0;
        } else if s != Script::Other {
            self.mask |= 1 << s as u8;
            self.mixed |= self.mask & (self.mask - 1) != 0;
        }
    }
}

/// Stage 1 fast path: the run, from byte `i`, of non-ASCII chars that fold to themselves and
/// are each a segment of their own. Appends it to `dst` and returns its end (`i` when empty).
fn same_run(
    input: &str,
    i: usize,
    dst: &mut Buf,
    st: &mut FoldState,
    words: &mut WordScripts,
) -> usize {
    const MASK: u32 = I_SIMPLE | I_SAFE | I_UPPER | I_REMOVABLE;
    let bytes = input.as_bytes();
    let mut k = i;
    let mut scripts = 0u32;
    let mut last_len = 0;
    let mut last_lgc = false;
    // First find the run, then write it out in bulk.
    loop {
        let (c, l) = match (bytes.get(k), bytes.get(k + 1)) {
            (Some(&b0), Some(&b1)) if (0xC2..0xE0).contains(&b0) => {
                let cp = ((u32::from(b0) & 0x1F) << 6) | (u32::from(b1) & 0x3F);
                match char::from_u32(cp) {
                    Some(c) => (c, 2),
                    None => break,
                }
            }
            (Some(&b0), _) if b0 >= 0xE0 => match decode_at(bytes, k) {
                Some(d) => d,
                None => break,
            },
            _ => break,
        };
        let v = info(c);
        if v & MASK != (I_SIMPLE | I_SAFE) || v & I_CHAR_MASK != c as u32 {
            break;
        }
        let sc = (v >> I_OUT_SCRIPT_SHIFT) & 3;
        scripts |= 1 << sc;
        words.add(v & I_OUT_WORD != 0, script_bits(sc));
        last_lgc = sc != Script::Other as u32;
        k += l;
        last_len = l;
    }
    if k == i {
        return i;
    }
    // The char after the run must be a safe start; if not, the run's last char is the start of
    // its segment and goes through the general path (counting it twice in `words` is harmless).
    let next_ok = match bytes.get(k) {
        Some(&b) if b >= 0x80 => decode_at(bytes, k).is_none_or(|(c, _)| {
            let v = info(c);
            v & I_SAFE != 0 && v & I_REMOVABLE == 0
        }),
        _ => true,
    };
    if !next_ok {
        k -= last_len;
    }
    let run = bytes.get(i..k).unwrap_or_default();
    dst.text.push_str(input.get(i..k).unwrap_or_default());
    let (mut cs, mut ce) = (0u32, 0u32);
    if k < OFFSET_MAX as usize {
        let base = i as u32;
        dst.map.extend(run.iter().zip(base..).map(|(&b, p)| {
            if b & 0xC0 != 0x80 {
                cs = p;
                ce = p + utf8_len(b);
            }
            Span { start: cs, end: ce }
        }));
    } else {
        dst.map.extend(run.iter().enumerate().map(|(q, &b)| {
            if b & 0xC0 != 0x80 {
                cs = off(i + q);
                ce = off(i + q + utf8_len(b) as usize);
            }
            Span { start: cs, end: ce }
        }));
    }
    st.after_lgc = last_lgc;
    st.has_cyrillic_or_greek |= scripts & 0b0110 != 0;
    k
}

/// The length of the UTF-8 sequence that starts with `b`.
fn utf8_len(b: u8) -> u32 {
    match b {
        0..=0x7F => 1,
        0x80..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// What stage 1 saw.
struct FoldOutcome {
    has_cyrillic_or_greek: bool,
    mixed_word: bool,
}

/// Stage 1: fold `input` into `dst`.
fn stage_fold(input: &str, dst: &mut Buf) -> FoldOutcome {
    let bytes = input.as_bytes();
    let n = bytes.len();
    let mut st = FoldState::default();
    let mut words = WordScripts::default();
    let mut seg: SmallVec<[char; 8]> = SmallVec::new();
    let mut folded = Folded::new();
    // The char at `peek.0`, already decoded and looked up.
    let mut peek: Option<(usize, char, u32)> = None;
    let mut i = 0;
    while i < n {
        // Bulk path: a run of plain ASCII. Its last char is held back when the non-ASCII char
        // after it is not a safe start (a combining mark, say), since then the two must be
        // normalised together.
        if bytes.get(i).is_some_and(|&b| b < 0x80) {
            let mut end = plain_ascii_end(bytes, i);
            if end < n && bytes.get(end).is_some_and(|&b| b >= 0x80) {
                match decode_at(bytes, end) {
                    Some((c, _)) => {
                        let v = info(c);
                        peek = Some((end, c, v));
                        if v & I_SAFE == 0 || v & I_REMOVABLE != 0 {
                            end -= 1;
                        }
                    }
                    None => end -= 1,
                }
            }
            if end > i {
                if let Some(s) = input.get(i..end) {
                    dst.push_ascii(s, i);
                }
                if bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
                    words.add(true, Script::Latin);
                }
                let last_alpha = bytes.get(end - 1).is_some_and(u8::is_ascii_alphabetic);
                words.mask = if last_alpha {
                    1 << Script::Latin as u8
                } else {
                    0
                };
                st.after_lgc = last_alpha;
                i = end;
                continue;
            }
        }
        if bytes.get(i).is_some_and(|&b| b >= 0xC2) {
            let e = same_run(input, i, dst, &mut st, &mut words);
            if e > i {
                i = e;
                continue;
            }
        }
        let (c0, l0, v0) = match peek.take() {
            Some((at, c, v)) if at == i => (c, c.len_utf8(), v),
            _ => match decode_at(bytes, i) {
                Some((c, l)) => (c, l, info(c)),
                None => break,
            },
        };
        if v0 & I_REMOVABLE != 0 {
            i += l0;
            continue;
        }
        // A simple char that is a segment of its own (the char after it is a safe start).
        if v0 & I_SIMPLE != 0 {
            let k = i + l0;
            // Removable chars in between (a variation selector after an emoji) do not count.
            let mut q = k;
            let alone = loop {
                match bytes.get(q) {
                    Some(&b) if b >= 0x80 => match decode_at(bytes, q) {
                        Some((c2, l2)) => {
                            let v2 = info(c2);
                            if q == k {
                                peek = Some((k, c2, v2));
                            }
                            if v2 & I_REMOVABLE != 0 {
                                q += l2;
                                continue;
                            }
                            break v2 & I_SAFE != 0;
                        }
                        None => break true,
                    },
                    _ => break true,
                }
            };
            if alone {
                let fc = char::from_u32(v0 & I_CHAR_MASK).unwrap_or(c0);
                dst.push_char(fc, off(i), off(k), v0 & I_UPPER != 0);
                let out_script = script_bits(v0 >> I_OUT_SCRIPT_SHIFT);
                st.after_lgc = out_script != Script::Other;
                st.has_cyrillic_or_greek |= matches!(out_script, Script::Cyrillic | Script::Greek);
                words.add(v0 & I_OUT_WORD != 0, out_script);
                i = k;
                continue;
            }
        }
        // One NFKC segment: c0 and every following char that is not a safe start.
        seg.clear();
        seg.push(c0);
        let mut seg_end = i + l0;
        let mut j = seg_end;
        while let Some((c, l)) = decode_at(bytes, j) {
            let v = info(c);
            if v & I_REMOVABLE != 0 {
                j += l;
                continue;
            }
            if v & I_SAFE != 0 {
                peek = Some((j, c, v));
                break;
            }
            seg.push(c);
            j += l;
            seg_end = j;
        }
        fold_segment(&seg, &mut st, &mut folded);
        let (s, e) = (off(i), off(seg_end));
        for &(c, up) in &folded {
            dst.push_char(c, s, e, up);
            let (w, sc) = letter_props(c);
            words.add(w, sc);
        }
        i = j;
    }
    FoldOutcome {
        has_cyrillic_or_greek: st.has_cyrillic_or_greek,
        mixed_word: words.mixed,
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: hashtags.

fn is_lower(c: char, was_upper: bool) -> bool {
    !was_upper && c.is_lowercase()
}

fn stage_hashtags(src: &Buf, dst: &mut Buf, original: &[u8]) {
    let text = src.text.as_str();
    let t = text.as_bytes();
    let n = t.len();
    let mut copied = 0;
    let mut pos = 0;
    while let Some(found) = t.get(pos..).and_then(|r| memchr::memchr(b'#', r)) {
        let h = pos + found;
        pos = h + 1;
        let prev_ok = text
            .get(..h)
            .and_then(|s| s.chars().next_back())
            .is_none_or(|p| p != '#' && !is_word_char(p));
        if !prev_ok || !next_char(text, h + 1).is_some_and(is_body_start) {
            continue;
        }
        dst.copy_from(src, copied, h);
        // The body is copied in runs; `from` is where the current run starts.
        let mut p = h + 1;
        let mut from = p;
        let mut prev: Option<(char, bool)> = None;
        while let Some((c, l)) = decode_at(t, p) {
            if c == '_' {
                // Underscores belong to the body only when a letter or digit follows them.
                let mut q = p;
                while t.get(q) == Some(&b'_') {
                    q += 1;
                }
                if !next_char(text, q).is_some_and(is_body_start) {
                    break;
                }
                dst.copy_from(src, from, p);
                for u in p..q {
                    let (s, e) = src.span(u);
                    dst.push_char(' ', s, e, false);
                }
                prev = None;
                p = q;
                from = q;
                continue;
            }
            if !is_word_char(c) {
                break;
            }
            let up = src.upper_at(p, original);
            if let (true, Some((pc, pup))) = (up, prev) {
                let next_lower = decode_at(t, p + l).is_some_and(|(nc, _)| {
                    nc != '_' && is_lower(nc, src.upper_at(p + l, original))
                });
                if is_lower(pc, pup) || ((pup || pc.is_numeric()) && next_lower) {
                    // Empty at the boundary; inside one NFKC segment, that whole segment.
                    dst.copy_from(src, from, p);
                    from = p;
                    let (s, _) = src.span(p);
                    let e = dst.last_end().unwrap_or(s).max(s);
                    dst.push_char(' ', s, e, false);
                }
            }
            prev = Some((c, up));
            p += l;
        }
        dst.copy_from(src, from, p);
        copied = p;
        pos = p;
    }
    dst.copy_from(src, copied, n);
}

// ---------------------------------------------------------------------------------------------
// Stage 3: whitespace collapse and letter spacing.

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\n'
}

/// Whether `src.text[a..b]` is one letter that letter spacing may join.
fn is_single_token(src: &Buf, a: usize, b: usize) -> bool {
    match b - a {
        1 => src
            .text
            .as_bytes()
            .get(a)
            .is_some_and(u8::is_ascii_alphabetic),
        2..=4 => {
            next_char(&src.text, a).is_some_and(|c| c.len_utf8() == b - a && spacing_letter(c))
        }
        _ => false,
    }
}

fn skip_ws(t: &[u8], mut p: usize) -> usize {
    while t.get(p).is_some_and(|&b| is_ws(b)) {
        p += 1;
    }
    p
}

fn skip_token(t: &[u8], mut p: usize) -> usize {
    while let Some(v) = word_at(t, p) {
        let m = eq_mask(v, b' ') | eq_mask(v, b'\n');
        if m != 0 {
            return p + (m.trailing_zeros() / 8) as usize;
        }
        p += 8;
    }
    while t.get(p).is_some_and(|&b| !is_ws(b)) {
        p += 1;
    }
    p
}

/// If a run of ≥ 3 single-letter tokens starts at `start`, flush `src[*copied..start]`, emit
/// the joined run, and return the end of its last token.
fn spaced_run(src: &Buf, dst: &mut Buf, start: usize, copied: &mut usize) -> Option<usize> {
    let t = src.text.as_bytes();
    // Tokens (start, end) and, between consecutive tokens, the gap (start, end).
    let mut toks: SmallVec<[(usize, usize); 16]> = SmallVec::new();
    let mut gaps: SmallVec<[(usize, usize); 16]> = SmallVec::new();
    let first_end = skip_token(t, start);
    toks.push((start, first_end));
    let mut q = first_end;
    loop {
        let ge = skip_ws(t, q);
        if ge >= t.len() || t.get(q..ge).is_some_and(|g| g.contains(&b'\n')) {
            break;
        }
        let te = skip_token(t, ge);
        if !is_single_token(src, ge, te) {
            break;
        }
        gaps.push((q, ge));
        toks.push((ge, te));
        q = te;
    }
    if toks.len() < 3 {
        return None;
    }
    dst.copy_from(src, *copied, start);
    // Break after token k when gap k is long, unless that break would leave a run of
    // three or more one-letter pieces.
    let mut breaks: SmallVec<[bool; 16]> = gaps.iter().map(|&(a, b)| b - a >= 2).collect();
    let mut k = 0;
    while k < toks.len() {
        // Pieces are delimited by breaks; find maximal runs of one-token pieces.
        let one_piece = |k: usize, breaks: &[bool]| {
            (k == 0 || breaks[k - 1]) && (k + 1 == toks.len() || breaks[k])
        };
        if one_piece(k, &breaks[..]) {
            let mut e = k;
            while e + 1 < toks.len() && one_piece(e + 1, &breaks[..]) {
                e += 1;
            }
            if e - k + 1 >= 3 {
                for b in breaks.iter_mut().take(e).skip(k) {
                    *b = false;
                }
            }
            k = e + 1;
        } else {
            k += 1;
        }
    }
    for (k, &(a, b)) in toks.iter().enumerate() {
        if k > 0 && breaks[k - 1] {
            let (gs, ge) = gaps[k - 1];
            dst.push_char(' ', src.span(gs).0, src.span(ge - 1).1, false);
        }
        dst.copy_from(src, a, b);
    }
    *copied = q;
    Some(q)
}

/// Whether stage 3 would leave `t` as it is: no leading or trailing whitespace, no run of two
/// or more whitespace bytes, and no three single-char tokens in a row (only those can be a
/// letter-spaced run). Conservative: `false` only means "look closer".
fn spacing_is_noop(t: &[u8]) -> bool {
    let n = t.len();
    if t.first().is_some_and(|&b| is_ws(b)) || t.last().is_some_and(|&b| is_ws(b)) {
        return false;
    }
    let mut tok_start = 0;
    let mut singles = 0;
    // Called for the whitespace byte at `w`, which ends the token `tok_start..w`.
    let mut gap = |w: usize| -> bool {
        if w == tok_start {
            return false;
        }
        let tl = w - tok_start;
        if tl == 1 || (tl <= 4 && t.get(tok_start).is_some_and(|&b| b >= 0xC0)) {
            singles += 1;
            if singles >= 3 {
                return false;
            }
        } else {
            singles = 0;
        }
        if t.get(w) == Some(&b'\n') {
            singles = 0;
        }
        tok_start = w + 1;
        true
    };
    let mut p = 0;
    while let Some(v) = word_at(t, p) {
        let mut m = eq_mask(v, b' ') | eq_mask(v, b'\n');
        while m != 0 {
            if !gap(p + (m.trailing_zeros() / 8) as usize) {
                return false;
            }
            m &= m - 1;
        }
        p += 8;
    }
    while p < n {
        if t.get(p).is_some_and(|&b| is_ws(b)) && !gap(p) {
            return false;
        }
        p += 1;
    }
    // The last token may complete a run too.
    let tl = n - tok_start;
    !(singles >= 2 && (tl == 1 || (tl <= 4 && t.get(tok_start).is_some_and(|&b| b >= 0xC0))))
}

/// Stage 3. Returns whether the text changed (when it did not, `dst` is left empty) and
/// whether letter spacing joined anything.
fn stage_spacing(src: &Buf, dst: &mut Buf) -> (bool, bool) {
    let t = src.text.as_bytes();
    if spacing_is_noop(t) {
        return (false, false);
    }
    let n = t.len();
    let mut p = skip_ws(t, 0);
    let mut copied = p;
    let mut last_end = p;
    let mut joined = false;
    while p < n {
        let tok_start = p;
        p = skip_token(t, p);
        let tl = p - tok_start;
        if (tl == 1 || (tl <= 4 && t.get(tok_start).is_some_and(|&b| b >= 0xC0)))
            && is_single_token(src, tok_start, p)
        {
            if let Some(e) = spaced_run(src, dst, tok_start, &mut copied) {
                p = e;
                joined = true;
            }
        }
        last_end = p;
        let gs = p;
        p = skip_ws(t, p);
        if p >= n {
            break;
        }
        if p - gs == 1 && t.get(gs) == Some(&b' ') {
            continue;
        }
        dst.copy_from(src, copied, gs);
        let nl = t.get(gs..p).is_some_and(|g| g.contains(&b'\n'));
        dst.push_char(
            if nl { '\n' } else { ' ' },
            src.span(gs).0,
            src.span(p - 1).1,
            false,
        );
        copied = p;
    }
    if copied == 0 && last_end == n && dst.text.is_empty() {
        return (false, joined);
    }
    dst.copy_from(src, copied, last_end);
    (true, joined)
}

/// Stage 3b: drop a space between two characters of scripts written without spaces (CJK,
/// kana, Thai …): `实施惩 戒 措 施` → `实施惩戒措施`, so spacing out a Chinese or Japanese
/// keyword does not hide it. Terms of those scripts match as substrings anyway, so a real
/// separator lost this way changes no match. Returns false (and leaves `dst` unspecified)
/// when nothing changed.
fn stage_unspaced_gaps(src: &Buf, dst: &mut Buf) -> bool {
    let t = src.text.as_bytes();
    let mut copied = 0;
    for p in memchr::memchr_iter(b' ', t) {
        // Both neighbours are multi-byte characters (an unspaced script is never ASCII).
        if p == 0
            || t.get(p - 1).is_none_or(|&b| b < 0x80)
            || t.get(p + 1).is_none_or(|&b| b < 0xC0)
        {
            continue;
        }
        let before = src.text.get(..p).and_then(|s| s.chars().next_back());
        let after = src.text.get(p + 1..).and_then(|s| s.chars().next());
        // The next character must start a segment of its own: a voiced-sound mark (NFKC
        // makes `゛` a space and U+3099) would compose with the character before it on
        // the next pass.
        if before.is_some_and(is_unspaced)
            && after.is_some_and(|c| is_unspaced(c) && is_safe_start(c))
        {
            dst.copy_from(src, copied, p);
            copied = p + 1;
        }
    }
    if copied == 0 {
        return false;
    }
    dst.copy_from(src, copied, t.len());
    true
}

// ---------------------------------------------------------------------------------------------
// Stage 4: look-alike letters.

/// Rewrite mixed-script words into `dst`. Returns false (and leaves `dst` unspecified) when
/// nothing changed.
fn stage_confusables(src: &Buf, dst: &mut Buf) -> bool {
    let text = src.text.as_str();
    let mut changed = false;
    let mut copied = 0;
    let mut it = text.char_indices().peekable();
    while let Some(&(ws, c)) = it.peek() {
        if !letter_props(c).0 {
            it.next();
            continue;
        }
        // Scripts seen in the word; only a word with letters of two or more can change.
        let mut seen = 0u8;
        let mut we = ws;
        while let Some(&(p, c)) = it.peek() {
            let (is_letter, s) = letter_props(c);
            if !is_letter {
                break;
            }
            it.next();
            we = p + c.len_utf8();
            if s != Script::Other {
                seen |= 1 << s as u8;
            }
        }
        if seen.count_ones() < 2 {
            continue;
        }
        let word = text.get(ws..we).unwrap_or_default();
        let mut counts = [0u32; 3];
        let mut lookalike = [false; 3];
        for (k, c) in word.char_indices() {
            let s = script_of(c);
            if s == Script::Other {
                continue;
            }
            if skeleton(c, src.upper_at(ws + k, &[])).is_some() {
                lookalike[s as usize] = true;
            } else {
                counts[s as usize] += 1;
            }
        }
        let Some(w) = winner(counts) else {
            continue;
        };
        if !(0..3).any(|k| k != w as usize && lookalike[k]) {
            continue;
        }
        if !changed {
            dst.clear();
            dst.reserve(text.len());
            changed = true;
        }
        dst.copy_from(src, copied, ws);
        for (k, c) in word.char_indices() {
            let p = ws + k;
            let up = src.upper_at(p, &[]);
            let s = script_of(c);
            let mapped = if s != Script::Other && s != w {
                skeleton(c, up).and_then(|sk| lookalike_in(sk, w))
            } else {
                None
            };
            match mapped {
                Some(m) => {
                    let (a, b) = src.span(p);
                    dst.push_char(m, a, b, up);
                }
                None => dst.copy_from(src, p, p + c.len_utf8()),
            }
        }
        copied = we;
    }
    if changed {
        dst.copy_from(src, copied, text.len());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -----------------------------------------------------------------------------------------
    // Naive reference implementation: whole string, one char at a time, no fast paths. It
    // shares only the small pure tables above (which chars to remove, one-to-one maps,
    // scripts, look-alike tables), not any of the stage loops.

    fn reference(x: &str) -> String {
        // Stage 1: remove, NFKC over the whole string, fold char by char.
        let pre: String = x.chars().filter(|&c| !is_removable(c)).collect();
        let mut a: Vec<(char, bool)> = Vec::new();
        let mut after_lgc = false;
        for c in pre.nfkc() {
            if is_removable(c) {
                continue;
            }
            if is_combining_mark(c) {
                if !after_lgc {
                    a.push((c, false));
                }
                continue;
            }
            if let Some(m) = simple_map(c) {
                a.push((m, false));
                after_lgc = false;
                continue;
            }
            if c.is_whitespace() {
                a.push((if is_line_break(c) { '\n' } else { ' ' }, false));
                after_lgc = false;
                continue;
            }
            let up = c.is_uppercase();
            let lowered: Vec<char> = match c {
                'İ' | 'ı' => vec!['i'],
                'ß' | 'ẞ' => vec!['s', 's'],
                'ς' => vec!['σ'],
                _ => c.to_lowercase().collect(),
            };
            for l in lowered {
                if letter_script(l) == Script::Other {
                    a.push((l, up));
                    after_lgc = false;
                } else {
                    after_lgc = true;
                    if l == 'й' {
                        a.push((l, up));
                    } else {
                        for d in l.to_string().nfd() {
                            if !is_combining_mark(d) {
                                a.push((d, up));
                            }
                        }
                    }
                }
            }
        }

        // Stage 2: hashtags.
        let mut b: Vec<(char, bool)> = Vec::new();
        let mut i = 0;
        while i < a.len() {
            let c = a[i].0;
            let prev_ok = i == 0 || (a[i - 1].0 != '#' && !is_word_char(a[i - 1].0));
            if c == '#' && prev_ok && a.get(i + 1).is_some_and(|x| is_body_start(x.0)) {
                let mut j = i + 1;
                while let Some(&(c, up)) = a.get(j) {
                    if c == '_' {
                        let mut q = j;
                        while a.get(q).is_some_and(|x| x.0 == '_') {
                            q += 1;
                        }
                        if !a.get(q).is_some_and(|x| is_body_start(x.0)) {
                            break;
                        }
                        for _ in j..q {
                            b.push((' ', false));
                        }
                        j = q;
                        continue;
                    }
                    if !is_word_char(c) {
                        break;
                    }
                    if up && j > i + 1 && a[j - 1].0 != '_' {
                        let (pc, pup) = a[j - 1];
                        let next_lower = a
                            .get(j + 1)
                            .is_some_and(|&(nc, nup)| !nup && nc.is_lowercase());
                        if (!pup && pc.is_lowercase()) || ((pup || pc.is_numeric()) && next_lower) {
                            b.push((' ', false));
                        }
                    }
                    b.push((c, up));
                    j += 1;
                }
                i = j;
            } else {
                b.push(a[i]);
                i += 1;
            }
        }

        // Stage 3: tokens and gaps; letter spacing; collapse.
        let mut tokens: Vec<Vec<(char, bool)>> = Vec::new();
        let mut gaps: Vec<(usize, bool)> = Vec::new(); // gaps[k] lies between tokens k and k+1
        let mut cur: Vec<(char, bool)> = Vec::new();
        let mut gap = (0usize, false);
        for &(c, up) in &b {
            if c == ' ' || c == '\n' {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                    gap = (0, false);
                }
                gap.0 += 1;
                gap.1 |= c == '\n';
            } else {
                if cur.is_empty() && !tokens.is_empty() {
                    gaps.push(gap);
                }
                cur.push((c, up));
            }
        }
        if !cur.is_empty() {
            tokens.push(cur);
        }
        let single = |t: &Vec<(char, bool)>| t.len() == 1 && is_spacing_letter(t[0].0);
        let mut c_out: Vec<(char, bool)> = Vec::new();
        let mut k = 0;
        while k < tokens.len() {
            if k > 0 {
                c_out.push((if gaps[k - 1].1 { '\n' } else { ' ' }, false));
            }
            if single(&tokens[k]) {
                let mut e = k;
                while e + 1 < tokens.len() && !gaps[e].1 && single(&tokens[e + 1]) {
                    e += 1;
                }
                if e - k + 1 >= 3 {
                    let mut pieces: Vec<Vec<usize>> = vec![vec![k]];
                    for m in k + 1..=e {
                        if gaps[m - 1].0 >= 2 {
                            pieces.push(vec![m]);
                        } else {
                            pieces.last_mut().unwrap().push(m);
                        }
                    }
                    let mut merged: Vec<Vec<usize>> = Vec::new();
                    let mut idx = 0;
                    while idx < pieces.len() {
                        let mut j = idx;
                        while j < pieces.len() && pieces[j].len() == 1 {
                            j += 1;
                        }
                        if j - idx >= 3 {
                            merged.push(pieces[idx..j].concat());
                        } else if j > idx {
                            merged.extend(pieces[idx..j].iter().cloned());
                        } else {
                            merged.push(pieces[idx].clone());
                            j = idx + 1;
                        }
                        idx = j;
                    }
                    for (pi, piece) in merged.iter().enumerate() {
                        if pi > 0 {
                            c_out.push((' ', false));
                        }
                        for &m in piece {
                            c_out.push(tokens[m][0]);
                        }
                    }
                    k = e + 1;
                    continue;
                }
            }
            c_out.extend(tokens[k].iter().copied());
            k += 1;
        }

        // Stage 3b: no space between two characters of unspaced scripts.
        let mut c_gap: Vec<(char, bool)> = Vec::new();
        for (i, &(c, up)) in c_out.iter().enumerate() {
            let between = c == ' '
                && i > 0
                && is_unspaced(c_out[i - 1].0)
                && c_out
                    .get(i + 1)
                    .is_some_and(|n| is_unspaced(n.0) && is_safe_start(n.0));
            if !between {
                c_gap.push((c, up));
            }
        }

        // Stage 4: look-alikes, word by word.
        let mut d = c_gap;
        let mut i = 0;
        while i < d.len() {
            if !is_word_letter(d[i].0) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < d.len() && is_word_letter(d[j].0) {
                j += 1;
            }
            let mut counts = [0u32; 3];
            for &(c, up) in &d[i..j] {
                let s = letter_script(c);
                if s != Script::Other && skeleton(c, up).is_none() {
                    counts[s as usize] += 1;
                }
            }
            if let Some(w) = winner(counts) {
                for x in &mut d[i..j] {
                    let s = letter_script(x.0);
                    if s != Script::Other && s != w {
                        if let Some(m) = skeleton(x.0, x.1).and_then(|sk| lookalike_in(sk, w)) {
                            x.0 = m;
                        }
                    }
                }
            }
            i = j;
        }
        d.iter().map(|x| x.0).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Helpers.

    /// Assert the normalised form (fast and reference) and idempotence.
    fn check(input: &str, expected: &str) {
        let n = normalize(input);
        assert_eq!(n.as_str(), expected, "normalize({input:?})");
        assert_eq!(reference(input), expected, "reference({input:?})");
        assert_eq!(
            normalize(expected).as_str(),
            expected,
            "idempotence of {expected:?}"
        );
    }

    /// Find `needle` in the normalised form of `input` and return the original text it maps to.
    fn origin<'a>(input: &'a str, needle: &str) -> &'a str {
        let n = normalize(input);
        let s = n
            .as_str()
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {:?}", n.as_str()));
        let r = n.original_range(s, s + needle.len());
        &input[r]
    }

    // -----------------------------------------------------------------------------------------
    // Rule by rule.

    #[test]
    fn nfkc_full_width_and_ligatures() {
        check("ＳＡＮＣＴＩＯＮＳ imposed", "sanctions imposed");
        assert_eq!(
            origin("New ＳＡＮＣＴＩＯＮＳ!", "sanctions"),
            "ＳＡＮＣＴＩＯＮＳ"
        );
        check("ﬁnal ﬂag", "final flag");
        assert_eq!(origin("the ﬁnal word", "fi"), "ﬁ");
        assert_eq!(origin("the ﬁnal word", "i"), "ﬁ");
        check("ｶﾞｲﾑｼｮｳ", "ガイムショウ");
        check("xx\u{00A0}yy\u{3000}zz", "xx yy zz");
        check("e\u{301}", "e");
    }

    #[test]
    fn format_chars_removed() {
        check("new sanc\u{200B}tions today", "new sanctions today");
        assert_eq!(
            origin("new sanc\u{200B}tions today", "sanctions"),
            "sanc\u{200B}tions"
        );
        check("sanc\u{200D}tions", "sanctions");
        check(
            "\u{FEFF}expel\u{AD}led \u{202E}envoy\u{202C}",
            "expelled envoy",
        );
        check("\u{2066}embassy\u{2069} closed\u{2060}", "embassy closed");
        check("❤\u{FE0F} sanc\u{FE0F}tions", "❤ sanctions");
        // Removed chars between a letter and a mark: the mark still belongs to the letter.
        check("e\u{200B}\u{301}", "e");
    }

    #[test]
    fn case_folding() {
        check("YAPTIRIM", "yaptirim");
        check("yaptırım", "yaptirim");
        check("İSTANBUL İçişleri", "istanbul icisleri");
        assert_eq!(
            origin("Yeni YAPTIRIMLAR açıklandı", "yaptirimlar"),
            "YAPTIRIMLAR"
        );
        assert_eq!(origin("İçişleri Bakanlığı", "icisleri"), "İçişleri");
        check(
            "Maßnahmen MASSNAHMEN Straẞe",
            "massnahmen massnahmen strasse",
        );
        assert_eq!(origin("Die Maßnahmen", "massnahmen"), "Maßnahmen");
        assert_eq!(origin("Maßnahmen", "ss"), "ß");
        check("ΚΥΡΩΣΕΙΣ κυρώσεις", "κυρωσεισ κυρωσεισ");
        check("САНКЦИИ", "санкции");
    }

    #[test]
    fn diacritics() {
        check("Sanciones económicas", "sanciones economicas");
        check("la expulsión del embajador", "la expulsion del embajador");
        assert_eq!(origin("la expulsión del", "expulsion"), "expulsión");
        check(
            "Ausweisung des Botschafters; Maßnahmen gegen Übergriffe",
            "ausweisung des botschafters; massnahmen gegen ubergriffe",
        );
        check("façade mañana naïve", "facade manana naive");
        check("ёлка Ёж", "елка еж");
        check("йод Йемен", "йод йемен");
        check("ї ў", "і у");
        check("άλφα έψιλον ΐ", "αλφα εψιλον ι");
        // Combining marks of other scripts survive.
        check("制裁が発動", "制裁が発动");
        check("か\u{3099}", "が");
        check("राजदूत निष्कासित", "राजदूत निष्कासित");
        check("การคว่ำบาตร", &"การคว่ำบาตร".nfkc().collect::<String>());
        // Decomposed input composes the same.
        check("expulsio\u{301}n", "expulsion");
        assert_eq!(origin("expulsio\u{301}n", "expulsion"), "expulsio\u{301}n");
    }

    #[test]
    fn arabic_and_persian() {
        check("عـــقـــوبـــات", "عقوبات");
        assert_eq!(
            origin("فرض عـــقـــوبـــات جديدة", "عقوبات"),
            "عـــقـــوبـــات"
        );
        check("عُقُوبَاتٌ", "عقوبات");
        check("أحمد إلى آمن ٱلله", "احمد الي امن الله");
        check("مستشفى", "مستشفي");
        check("سفارة", "سفاره");
        check("مؤتمر رئيس", "موتمر رييس");
        check("ایران کشور", "ايران كشور");
        check("٢٠٢٤ ۱۴۰۳", "2024 1403");
        assert_eq!(origin("عام ٢٠٢٤", "2024"), "٢٠٢٤");
        // Persian zero-width non-joiner.
        let a = normalize("می\u{200C}خواهد");
        let b = normalize("میخواهد");
        assert_eq!(a.as_str(), b.as_str());
        assert_eq!(a.as_str(), "ميخواهد");
        assert_eq!(origin("او می\u{200C}خواهد", "ميخواهد"), "می\u{200C}خواهد");
        // Presentation forms.
        check("\u{FEFB}", "لا");
        check("ب\u{FE71}", "ب");
    }

    #[test]
    fn lookalikes() {
        check("ѕаnсtіоns", "sanctions");
        check("sаnctions", "sanctions");
        assert_eq!(origin("new sаnctions", "sanctions"), "sаnctions");
        check("SАNCTIONS", "sanctions");
        check("ΡΕRSONA NON GRATA", "persona non grata");
        check("SAΝCTIONS", "sanctions");
        check("GОVЕRNMЕNT", "government");
        check("cанкции", "санкции");
        assert_eq!(origin("новые cанкции", "санкции"), "cанкции");
        check("санкцiи", "санкціи");
        check("ПOСОЛЬСТВО", "посольство");
        check("κυρώσeις", "κυρωσεισ");
        assert_eq!(origin("νέες κυρώσeις σήμερα", "κυρωσεισ"), "κυρώσeις");
        assert_eq!(origin("declared ΡΕRSONA non grata", "persona"), "ΡΕRSONA");
        // No unambiguous letter, or a tie: left alone.
        check("сосо", "сосо");
        check("coco", "coco");
        check("aж", "аж");
        check("zаж", "zаж");
        // Whole-script words are untouched.
        check("посол expelled", "посол expelled");
    }

    #[test]
    fn hashtags_and_camel_case() {
        check(
            "We declare him #PersonaNonGrata.",
            "we declare him persona non grata.",
        );
        assert_eq!(
            origin("We declare him #PersonaNonGrata.", "persona non grata"),
            "PersonaNonGrata"
        );
        check("#persona_non_grata", "persona non grata");
        assert_eq!(
            origin("#persona_non_grata!", "persona non grata"),
            "persona_non_grata"
        );
        check("#NATOSummit", "nato summit");
        check("#G20", "g20");
        check("#G20Summit", "g20 summit");
        check("#COVID19", "covid19");
        check("@NATO @PersonaNonGrata", "@nato @personanongrata");
        check(
            "Hello#World C#Sharp ##Tag #_x #",
            "hello#world c#sharp ##tag #_x #",
        );
        check("(#SanctionsNow)", "(sanctions now)");
        check("#Foo_#Bar", "foo_#bar");
        check("＃ＰｅｒｓｏｎａＮｏｎＧｒａｔａ", "persona non grata");
        check("#外交部", "外交部");
        check("#ΚυρώσειςΤώρα", "κυρωσεισ τωρα");
        // CamelCase is split only inside hashtags.
        check("PersonaNonGrata", "personanongrata");
    }

    #[test]
    fn letter_spacing() {
        check("p e r s o n a  n o n  g r a t a", "persona non grata");
        assert_eq!(
            origin(
                "declared p e r s o n a  n o n  g r a t a today",
                "persona non grata"
            ),
            "p e r s o n a  n o n  g r a t a"
        );
        check("S A N C T I O N S", "sanctions");
        assert_eq!(
            origin("new S A N C T I O N S now", "sanctions"),
            "S A N C T I O N S"
        );
        check("S A N C T I O N S!", "sanction s!");
        check("I am a man", "i am a man");
        check("a b", "a b");
        check("plan a b or c", "plan a b or c");
        check("с а н к ц и и", "санкции");
        check("ع ق و ب ا ت", "عقوبات");
        check("s а n c t i o n s", "sanctions");
        // CJK is no letter spacing; its gaps close in stage 3b.
        check("外 交 部", "外交部");
        // A line break ends a run.
        check("a b\nc d", "a b\nc d");
        check("a b c\nd e", "abc\nd e");
        // Idempotence-driven widening (see module docs).
        check("a  b  c", "abc");
        check("x y  z", "xy z");
    }

    #[test]
    fn punctuation_variants() {
        check("don’t ‘quote’ ʼok′ `x`", "don't 'quote' 'ok' 'x'");
        check("“Persona” «non» „grata“", "\"persona\" \"non\" \"grata\"");
        check(
            "2019–2020 — a ‐ b ‑ c ‒ d − e",
            "2019-2020 - a - b - c - d - e",
        );
        check("x, y; z! (w) [v] {u}", "x, y; z! (w) [v] {u}");
    }

    #[test]
    fn whitespace_and_newlines() {
        check("  foo \t bar  ", "foo bar");
        check("foo\r\n\r\nbar", "foo\nbar");
        check("foo  \n  bar", "foo\nbar");
        check("foo\u{2028}bar\u{2029}baz\u{85}qux", "foo\nbar\nbaz\nqux");
        check("foo\u{2003}\u{202F}bar", "foo bar");
        check("", "");
        check(" \n\t ", "");
        let n = normalize("foo \t bar");
        let s = n.as_str().find(' ').unwrap();
        assert_eq!(n.original_range(s, s + 1), 3..6);
    }

    #[test]
    fn spaces_inside_unspaced_scripts_are_dropped() {
        check("实施惩 戒 措 施——禁止", "实施惩戒措施--禁止");
        check("制 裁", "制裁");
        check("大使を 召 喚", "大使を召唤");
        // Between an unspaced and a spaced script, and across lines, spaces stay.
        check("中国 expels 外交官", "中国 expels 外交官");
        check("制\n裁", "制\n裁");
        check("외교부 대사 초치", "외교부 대사 초치");
        assert_eq!(origin("实施惩 戒 措 施", "惩戒措施"), "惩 戒 措 施");
        // Regression (property test): `゛` is a space and a combining mark after NFKC;
        // closing that gap would compose ヘ + ゛ into ベ on a second pass.
        check("ぁヘ゛", "ぁヘ \u{3099}");
    }

    #[test]
    fn traditional_chinese_folds_to_simplified() {
        check(
            "中國外交部宣布對美國實施制裁",
            "中国外交部宣布对美国实施制裁",
        );
        check("驅逐兩名外交官", "驱逐两名外交官");
        assert_eq!(origin("臺灣當局宣布斷交。", "断交"), "斷交");
        // Japanese kanji that are traditional forms fold the same way, in rule terms
        // and posts alike (evidence still shows the original).
        check("外務省", "外务省");
        // Every fold is final: its target is no traditional character itself.
        for &(t, s) in hant::T2S.iter() {
            let (t, s) = (t.to_string(), s.to_string());
            assert_eq!(normalize(&t).as_str(), s, "{t}");
            assert_eq!(normalize(&s).as_str(), s, "{s}");
        }
    }

    #[test]
    fn cjk_and_thai_pass_through() {
        check("外交部长会见大使", "外交部长会见大使");
        assert_eq!(origin("今天外交部长会见大使。", "会见"), "会见");
        check("外務省は大使を召喚した", "外务省は大使を召唤した"); // kanji fold like hanzi
        check("외교부 대사 초치", "외교부 대사 초치");
        check("กระทรวงการต่างประเทศ", "กระทรวงการต่างประเทศ");
        check("中国ＡＢＣ外交", "中国abc外交");
    }

    #[test]
    fn original_range_edges() {
        let input = "A #B";
        let n = normalize(input);
        assert_eq!(n.as_str(), "a b");
        assert_eq!(n.original_range(0, 0), 0..0);
        assert_eq!(n.original_range(3, 3), 4..4);
        assert_eq!(n.original_range(0, 3), 0..4);
        assert_eq!(n.original_range(2, 3), 3..4);
        assert_eq!(n.original_range(5, 9), 4..4);
        let empty = Normalized::new();
        assert_eq!(empty.as_str(), "");
        assert_eq!(empty.original_range(0, 0), 0..0);
    }

    #[test]
    fn reuse_gives_same_result() {
        let mut n = Normalized::new();
        for s in [
            "Ｌｏｎｇ ＴＥＸＴ #HashTag ѕаnсtіоns",
            "x",
            "",
            "p e r s o n a",
        ] {
            normalize_into(s, &mut n);
            assert_eq!(n.as_str(), normalize(s).as_str());
        }
    }

    /// Every single code point normalises to a fixed point, alone and next to ASCII.
    #[test]
    fn every_char_is_idempotent() {
        let mut n1 = Normalized::new();
        let mut n2 = Normalized::new();
        let mut s = String::new();
        for cp in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            for (pre, post) in [("", ""), ("a", "b")] {
                s.clear();
                s.push_str(pre);
                s.push(c);
                s.push_str(post);
                normalize_into(&s, &mut n1);
                normalize_into(n1.as_str(), &mut n2);
                assert_eq!(n1.as_str(), n2.as_str(), "U+{cp:04X} in {s:?}");
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Properties.

    fn mixed_char() -> impl Strategy<Value = char> {
        prop_oneof![
            8 => proptest::char::range(' ', '~'),
            2 => proptest::char::range('\u{A0}', '\u{24F}'),
            2 => proptest::char::range('\u{300}', '\u{36F}'),
            3 => proptest::char::range('\u{370}', '\u{3FF}'),
            1 => proptest::char::range('\u{1F00}', '\u{1FFF}'),
            3 => proptest::char::range('\u{400}', '\u{4FF}'),
            3 => proptest::char::range('\u{600}', '\u{6FF}'),
            1 => proptest::char::range('\u{FB50}', '\u{FDFF}'),
            1 => proptest::char::range('\u{FE70}', '\u{FEFF}'),
            2 => proptest::char::range('\u{4E00}', '\u{4E40}'),
            1 => proptest::char::range('\u{3040}', '\u{30FF}'),
            1 => proptest::char::range('\u{FF00}', '\u{FFEF}'),
            1 => proptest::char::range('\u{1100}', '\u{11FF}'),
            1 => proptest::char::range('\u{AC00}', '\u{AC20}'),
            1 => proptest::char::range('\u{900}', '\u{97F}'),
            1 => proptest::char::range('\u{E00}', '\u{E7F}'),
            1 => proptest::char::range('\u{2000}', '\u{206F}'),
            1 => proptest::char::range('\u{1D400}', '\u{1D4FF}'),
            2 => prop::sample::select(vec![
                '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{AD}',
                '\u{200E}', '\u{202E}', '\u{2066}', '\u{FE0F}', '\u{640}', '\u{E0101}',
            ]),
            4 => prop::sample::select(vec![
                '#', '#', '_', ' ', ' ', ' ', '\n', '\r', '\t', '\u{2028}', '\u{A0}',
                '\u{3000}', '\u{85}', '@',
            ]),
            2 => prop::sample::select(vec![
                'İ', 'ı', 'ß', 'ẞ', 'ς', 'Σ', 'й', 'Й', 'ё', 'Ν', 'ν', 'Υ', 'υ', 'Η', 'η',
                'ѕ', 'і', 'ј', 'а', 'с', 'о', 'Α', 'ο', '’', '“', '—', 'ی', 'ک', 'أ', '٣',
            ]),
        ]
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => mixed_char().prop_map(String::from),
            2 => (
                prop::sample::select(vec!['a', 'B', 'с', 'Д', 'ο', 'Ν', 'ع', 'ق', 'x', '外', 'é']),
                prop::sample::select(vec![" ", " ", "  ", " \n", ""]),
            )
                .prop_map(|(c, s)| format!("{c}{s}")),
            1 => "#[A-Z]{0,3}[a-z]{0,3}[A-Z0-9_]{0,3}[a-z]{0,2}",
            1 => "[a-zA-Z]{2,7}",
            1 => "[a-z ]{8,24}",
            1 => "[а-яёА-Я]{2,9}",
            1 => "[α-ωά-ώΑ-Ω]{2,7}",
            1 => "[ء-ي]{2,7}",
            1 => "[一-龥ぁ-んア-ン가-힣]{2,6}",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..48).prop_map(|v| v.concat())
    }

    /// The output's char boundaries.
    fn boundaries(s: &str) -> Vec<usize> {
        s.char_indices().map(|(i, _)| i).chain([s.len()]).collect()
    }

    fn check_map(input: &str) -> Result<(), TestCaseError> {
        let n = normalize(input);
        let out = n.as_str();
        let bs = boundaries(out);
        let m = bs.len() - 1;
        // Per output char.
        let mut prev: Option<Range<usize>> = None;
        for k in 0..m {
            let r = n.original_range(bs[k], bs[k + 1]);
            prop_assert!(r.start <= r.end && r.end <= input.len());
            prop_assert!(input.is_char_boundary(r.start) && input.is_char_boundary(r.end));
            let ch = out[bs[k]..].chars().next().unwrap();
            if ch != ' ' {
                prop_assert!(r.start < r.end, "char {ch:?} maps to nothing");
            }
            if let Some(p) = &prev {
                prop_assert!(r.start >= p.start && r.end >= p.end, "{p:?} then {r:?}");
            }
            prev = Some(r);
        }
        // Every range, or a sample of them for long outputs.
        let step = if m > 40 { m / 20 } else { 1 };
        for i in (0..=m).step_by(step) {
            for j in (i..=m).step_by(step) {
                let r = n.original_range(bs[i], bs[j]);
                prop_assert!(r.start <= r.end && r.end <= input.len());
                prop_assert!(input.is_char_boundary(r.start) && input.is_char_boundary(r.end));
                for k in i..j {
                    let rk = n.original_range(bs[k], bs[k + 1]);
                    prop_assert!(r.start <= rk.start && rk.end <= r.end);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn prop_matches_reference(s in text()) {
            let n = normalize(&s);
            prop_assert_eq!(n.as_str(), reference(&s));
        }

        #[test]
        fn prop_idempotent(s in text()) {
            let once = normalize(&s);
            let twice = normalize(once.as_str());
            prop_assert_eq!(once.as_str(), twice.as_str());
        }

        #[test]
        fn prop_offset_map(s in text()) {
            check_map(&s)?;
        }

        #[test]
        fn prop_arbitrary_strings(s in any::<String>()) {
            let once = normalize(&s);
            prop_assert_eq!(once.as_str(), reference(&s));
            let twice = normalize(once.as_str());
            prop_assert_eq!(twice.as_str(), once.as_str());
            check_map(&s)?;
        }
    }
}
