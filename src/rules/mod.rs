//! Rules: the file format analysts edit, its compiler, and the matcher.
//!
//! ```text
//! rules/*.yaml ──► format (serde, spans) ──► compile (validate, one Aho-Corasick
//!                                             automaton + RegexSet) ──► RuleSet
//! post ──► normalise fields ──► scan once per field ──► evaluate only the rules
//!                                                      whose gate holds (`gate`)
//! ```
//!
//! * [`format`]: raw serde types with `deny_unknown_fields` and source spans.
//! * [`compile`]: validation into an immutable [`RuleSet`]; every problem becomes a
//!   [`Diagnostic`] with `file:line:column`.
//! * [`matcher`]: the per-post hot path ([`Matcher`]); pure, no I/O.
//! * [`examples`]: runs the examples embedded in rule files (`attache test`).
//!
//! The language itself is documented for analysts in `rules/README.md`.

pub mod compile;
pub mod examples;
pub mod format;
pub(crate) mod gate;
pub mod matcher;

use std::fmt;
use std::path::{Path, PathBuf};

pub use compile::{load_dir, load_sources, RuleSet, Source};
pub use matcher::{Evidence, FieldRef, Matcher, RuleMatch, Trace};

/// Alert severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 5] = [
        Self::Info,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Critical,
    ];

    /// Parse the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Escalation score used when a rule gives none.
    pub fn default_score(self) -> f64 {
        match self {
            Self::Info => 0.0,
            Self::Low => 1.0,
            Self::Medium => 3.0,
            Self::High => 6.0,
            Self::Critical => 9.0,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a rule file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The files were read but are not a valid rule set.
    #[error("{} error(s) in rule files:\n{}", .0.len(), DiagList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    /// The diagnostics, if the error is about content.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(d) => d,
            Self::Io { .. } => &[],
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

struct DiagList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
