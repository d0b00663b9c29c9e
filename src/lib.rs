//! attaché: early warning of diplomatic crises from what official government accounts
//! post.
//!
//! ```text
//! source ──► decode ──► normalise ──► match ──► alert ──► route ──► sinks
//! (file,     (post,     (unicode,     (one       (JSON      (every     (stdout, …)
//!  stdin,     limits)    confusables,  automaton  contract)  sink
//!  sample)               hashtags)     + regex)              accepts)
//!                                    ▲
//!                   rules/ ──► compile ──► ArcSwap<RuleSet> (check, test, reload)
//! ```
//!
//! Modules, in pipeline order:
//! * [`source`]: where posts come from (bundled sample, JSON-lines file, stdin).
//! * [`decode`]: bytes → canonical [`decode::Post`], with limits and reasons.
//! * [`normalize`]: the text folding both rules and posts go through.
//! * [`rules`]: the rule language — format, compiler, matcher, examples.
//! * [`alert`]: the versioned alert JSON (`attache.alert.v1`).
//! * [`sink`]: where alerts go.
//! * [`pipeline`]: wires the stages with bounded channels; owns shutdown and reload.
//! * [`http`]: /metrics, /healthz, /readyz, /rules, POST /-/reload, POST /explain.
//! * [`telemetry`]: logging and metrics, emitted by the stage loops as events.
//! * [`watch`]: reloads the rules when their directory changes.
//! * [`config`]: the TOML configuration.
//! * [`commands`]: the offline subcommands (scan, eval, explain).
#![forbid(unsafe_code)]

pub mod alert;
pub mod commands;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod embedded;
pub mod escalation;
pub mod http;
pub mod lines;
pub mod normalize;
pub mod pipeline;
pub mod registry;
pub mod route;
pub mod rules;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod watch;
