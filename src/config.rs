//! Configuration: one TOML file, in two steps — raw serde structs that reject unknown
//! keys, then a validated [`Config`]. Every key and its default is documented in
//! `config/README.md` (a test keeps the two in step); deployment settings and
//! secrets can come from the environment (`ATTACHE_*`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decode::DEFAULT_MAX_BYTES;
use crate::embedded::DEFAULT_SAMPLE;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Default HTTP address: loopback, port 9464 (the Prometheus exporter range).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}
fn default_rules_dir() -> PathBuf {
    "rules".into()
}
fn default_true() -> bool {
    true
}
fn default_sample() -> String {
    DEFAULT_SAMPLE.into()
}
fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}
// A burst of editor writes settles well within this.
fn default_debounce_ms() -> u64 {
    250
}
// Room for a few seconds of a firehose between stages without unbounded memory.
fn default_channel_capacity() -> usize {
    1024
}

/// `[input]`: where posts come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// `sample` (a stream bundled in the binary), `file`, `stdin` or `kafka`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// For `file`: the JSON-lines file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For `sample`: which bundled stream.
    #[serde(default = "default_sample")]
    pub sample: String,
    /// Largest message accepted; bigger ones go to the dead letters.
    #[serde(default = "default_max_bytes")]
    pub max_message_bytes: usize,
}

fn default_kind() -> String {
    "sample".into()
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            path: None,
            sample: default_sample(),
            max_message_bytes: default_max_bytes(),
        }
    }
}

/// `[rules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Directory of rule files. Without a config file and without `./rules`, the
    /// rules embedded in the binary are used.
    #[serde(default = "default_rules_dir")]
    pub dir: PathBuf,
    /// Reload when a file in the directory changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last change before reloading, in milliseconds.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Run the rules' embedded examples before a reload is accepted.
    #[serde(default = "default_true")]
    pub reload_requires_examples: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            dir: default_rules_dir(),
            watch: true,
            debounce_ms: default_debounce_ms(),
            reload_requires_examples: true,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for /metrics, /healthz, /readyz, /rules, POST /-/reload, POST /explain.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve the POST endpoints (/-/reload, /explain).
    #[serde(default = "default_true")]
    pub enable_post: bool,
    /// Name of an environment variable holding a bearer token that POST requests must
    /// carry. Required when `listen` is not a loopback address and POST is enabled.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enable_post: true,
            bearer_token_env: None,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Print every alert as a JSON line on stdout.
    #[serde(default = "default_true")]
    pub stdout: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { stdout: true }
    }
}

// Messages with alerts awaiting their sinks at once; bounds memory when sinks are slow.
fn default_max_in_flight() -> usize {
    10_000
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of the bounded channels between stages (messages).
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Messages with alerts waiting for their sinks at once (then the source pauses).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: default_channel_capacity(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

// Kafka defaults: a local broker, group `attache`, topic `posts`, read from the start
// when the group has no offset; a session timeout short enough that a restarted member
// is back quickly after a crash, and a drain deadline inside it.
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group() -> String {
    "attache".into()
}
fn default_topics() -> Vec<String> {
    vec!["posts".into()]
}
fn default_reset() -> String {
    "earliest".into()
}
fn default_session_ms() -> u64 {
    6000
}
fn default_drain_ms() -> u64 {
    4000
}
fn default_strategy() -> String {
    "cooperative-sticky".into()
}
fn default_stats_ms() -> u64 {
    5000
}

/// 2 ms: measured with `scripts/bench-kafka` against Tansu, which holds every fetch for
/// the whole wait (librdkafka's 500 ms gave p99 547 ms; 2–3 ms gave p99 ~30 ms on a
/// loaded machine, 1 ms no better). Against Kafka it only matters when the topic is idle.
fn default_fetch_wait_ms() -> u64 {
    2
}

/// 1 ms: alerts are few next to posts, so batching buys little; every ms of linger is a
/// ms before the message completes (librdkafka's default is 5 ms).
fn default_producer_linger_ms() -> u64 {
    1
}
fn default_commit_ms() -> u64 {
    1000
}
fn default_max_message_bytes() -> usize {
    1_000_000
}

/// `[kafka]`: the consumer group, the alerts topic and the dead-letter topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,…`). Env: `ATTACHE_KAFKA_BROKERS`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group id. Env: `ATTACHE_KAFKA_GROUP_ID`.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Topics to read.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    /// Or: a regex of topics to read (instead of `topics`).
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    /// Consumer session timeout (ms): how fast a crashed member's partitions move.
    #[serde(default = "default_session_ms")]
    pub session_timeout_ms: u64,
    /// Deadline to finish in-flight messages on revocation and shutdown (ms); must be
    /// shorter than the session timeout.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
    /// `cooperative-sticky` (incremental rebalancing) or `range`, `roundrobin`.
    #[serde(default = "default_strategy")]
    pub assignment_strategy: String,
    /// librdkafka statistics interval (ms); feeds the consumer-lag metric.
    #[serde(default = "default_stats_ms")]
    pub statistics_interval_ms: u64,
    /// How often stored offsets are committed (ms).
    #[serde(default = "default_commit_ms")]
    pub commit_interval_ms: u64,
    /// librdkafka `fetch.wait.max.ms` of the consumer: how long the broker may hold a
    /// fetch for data. Every post waits for the fetch that brings it, so this bounds
    /// the ingest-to-alert latency (some brokers, Tansu among them, always hold the
    /// fetch this long).
    #[serde(default = "default_fetch_wait_ms")]
    pub fetch_wait_max_ms: u64,
    /// librdkafka `linger.ms` of the alerts and dead-letter producer: how long an alert
    /// may wait to share a request with others; it adds to the delivery latency.
    #[serde(default = "default_producer_linger_ms")]
    pub producer_linger_ms: u64,
    /// Topic for every alert (the DESIGN §7 JSON as is, keyed `ACTOR>TARGET`); none = off.
    #[serde(default)]
    pub alerts_topic: Option<String>,
    /// Topic for undecodable posts (original bytes + reason headers); none = the
    /// `[dead_letter]` file, else stderr.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Largest message the producer sends; bigger dead letters are truncated with a
    /// header saying so.
    #[serde(default = "default_max_message_bytes")]
    pub producer_max_message_bytes: usize,
    /// Extra librdkafka properties for consumer and producer (SASL/SSL, tuning).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// librdkafka properties whose values come from environment variables
    /// (property → variable name), for secrets such as `sasl.password`.
    #[serde(default)]
    pub properties_env: std::collections::BTreeMap<String, String>,
    /// Resolved `properties_env` values (filled by [`Config::load`]).
    #[serde(skip)]
    pub resolved_env: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("all fields have defaults"))
    }
}

impl KafkaConfig {
    /// Pass-through properties, with secrets from the environment.
    pub fn resolved_properties(&self) -> Vec<(&str, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.resolved_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect()
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// JSON log lines instead of human-readable text.
    #[serde(default)]
    pub json: bool,
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where posts come from.
    #[serde(default)]
    pub input: InputConfig,
    /// Rules.
    #[serde(default)]
    pub rules: RulesConfig,
    /// HTTP server.
    #[serde(default)]
    pub http: HttpConfig,
    /// Outputs that need no delivery guarantees.
    #[serde(default)]
    pub output: OutputConfig,
    /// Stage plumbing.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Kafka (with `input.kind = "kafka"`, or for the alerts topic).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Notification and archive sinks (`[[sinks]]`), see `docs/webhooks.md`.
    #[serde(default)]
    pub sinks: Vec<crate::sink::config::RawSink>,
    /// Routes choosing sinks per alert (`[[routes]]`); none = every alert to every sink.
    #[serde(default)]
    pub routes: Vec<crate::sink::config::RawRoute>,
    /// Realert window of notification sinks.
    #[serde(default)]
    pub dedup: crate::sink::config::RawDedup,
    /// Dead-letter file for alerts a sink gave up on (and for undecodable posts when
    /// there is no Kafka dead-letter topic). Without this section: `dead-letters.jsonl`
    /// for deliveries, stderr for undecodable posts.
    #[serde(default)]
    pub dead_letter: Option<crate::sink::config::RawDeadLetter>,
    /// The escalation index per pair of states (DESIGN §5), see `docs/escalation.md`.
    #[serde(default)]
    pub escalation: EscalationConfig,
    /// Where the file was read from (`None` for the embedded default).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One level of `[escalation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Name (`watch`, `warning`, `crisis`).
    pub name: String,
    /// Index at or above which the level holds.
    pub at: f64,
    /// Severity of the escalation alert announcing it.
    pub severity: String,
}

/// `[escalation.tier_weights]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierWeights {
    /// Heads of state and government.
    pub head_of_state: f64,
    /// Foreign ministries, ministers, spokespeople.
    pub foreign_ministry: f64,
    /// Embassies, consulates, missions.
    pub embassy: f64,
    /// State media, proxies, other registered accounts.
    pub state_media: f64,
}

impl Default for TierWeights {
    fn default() -> Self {
        let [head_of_state, foreign_ministry, embassy, state_media] =
            crate::escalation::Settings::default().tier_weights;
        Self {
            head_of_state,
            foreign_ministry,
            embassy,
            state_media,
        }
    }
}

/// `[escalation]`: the per-pair escalation index.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Keep the index and send escalation alerts.
    pub enabled: bool,
    /// Half-life of a contribution, hours of event time.
    pub half_life_hours: f64,
    /// Contributions older than this many half-lives are dropped.
    pub cutoff_half_lives: f64,
    /// Levels, ascending by `at`.
    pub levels: Vec<LevelConfig>,
    /// A level is left when the index falls below `at × (1 − hysteresis)`.
    pub hysteresis: f64,
    /// Weight per account tier (registered accounts).
    pub tier_weights: TierWeights,
    /// `keep` (with `unregistered_weight`) or `drop` alerts of unregistered accounts.
    pub unregistered: String,
    /// Weight of accounts not in the registry.
    pub unregistered_weight: f64,
    /// Categories that lower the index (sanctions lifted, relations restored, …).
    pub de_escalation_categories: Vec<String>,
    /// Rule tags meaning "a measure against the poster's state": counted target → actor.
    pub reverse_tags: Vec<String>,
    /// Categories where an answer in kind is a tit-for-tat.
    pub reciprocity_categories: Vec<String>,
    /// Window for an answer in kind, hours.
    pub reciprocity_window_hours: f64,
    /// Send an alert when a pair falls to a lower level.
    pub de_escalation_notices: bool,
    /// Most contributions kept per pair direction.
    pub max_contributions: usize,
    /// Pairs exported as `attache_escalation_index` gauges (highest index first).
    pub top_pairs: usize,
    /// Kafka: topic of pair contributions keyed by the unordered pair (the repartition
    /// topic that makes several instances agree); none = index in process.
    pub pairs_topic: Option<String>,
    /// Kafka: consumer group of the pairs topic (default `<group_id>.escalation`).
    pub pairs_group_id: Option<String>,
    /// Kafka: topic for escalation alerts; none = not on Kafka.
    pub escalations_topic: Option<String>,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        let s = crate::escalation::Settings::default();
        Self {
            enabled: true,
            half_life_hours: s.half_life_hours,
            cutoff_half_lives: s.cutoff_half_lives,
            levels: s
                .levels
                .iter()
                .map(|l| LevelConfig {
                    name: l.name.clone(),
                    at: l.at,
                    severity: l.severity.clone(),
                })
                .collect(),
            hysteresis: s.hysteresis,
            tier_weights: TierWeights::default(),
            unregistered: "keep".into(),
            unregistered_weight: s.unregistered_weight.unwrap_or(0.5),
            de_escalation_categories: s.de_escalation_categories,
            reverse_tags: s.reverse_tags,
            reciprocity_categories: s.reciprocity_categories,
            reciprocity_window_hours: s.reciprocity_window_hours,
            de_escalation_notices: s.de_escalation_notices,
            max_contributions: s.max_contributions,
            top_pairs: 10,
            pairs_topic: None,
            pairs_group_id: None,
            escalations_topic: None,
        }
    }
}

impl EscalationConfig {
    /// The validated runtime settings, or what is wrong.
    pub fn settings(&self) -> Result<crate::escalation::Settings, String> {
        let pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!(
                    "escalation.{name} must be a positive number (got {v})"
                ))
            }
        };
        pos("half_life_hours", self.half_life_hours)?;
        pos("cutoff_half_lives", self.cutoff_half_lives)?;
        pos("reciprocity_window_hours", self.reciprocity_window_hours)?;
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err(format!(
                "escalation.hysteresis must be in [0, 1) (got {})",
                self.hysteresis
            ));
        }
        if self.levels.is_empty() {
            return Err("escalation.levels: at least one level is needed".into());
        }
        for (i, l) in self.levels.iter().enumerate() {
            pos(&format!("levels[{i}].at"), l.at)?;
            if crate::rules::Severity::parse(&l.severity).is_none() {
                return Err(format!(
                    "escalation.levels[{i}].severity `{}` is not one of info, low, medium, high, critical",
                    l.severity
                ));
            }
            if l.name.is_empty() || self.levels[..i].iter().any(|o| o.name == l.name) {
                return Err(format!(
                    "escalation.levels[{i}].name `{}` is empty or repeated",
                    l.name
                ));
            }
            if i > 0 && l.at <= self.levels[i - 1].at {
                return Err(format!(
                    "escalation.levels must ascend: `{}` ({}) is not above `{}` ({})",
                    l.name,
                    l.at,
                    self.levels[i - 1].name,
                    self.levels[i - 1].at
                ));
            }
        }
        let w = &self.tier_weights;
        for (name, v) in [
            ("head_of_state", w.head_of_state),
            ("foreign_ministry", w.foreign_ministry),
            ("embassy", w.embassy),
            ("state_media", w.state_media),
            ("unregistered_weight", self.unregistered_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("escalation weight {name} must be ≥ 0 (got {v})"));
            }
        }
        let unregistered_weight = match self.unregistered.as_str() {
            "keep" => Some(self.unregistered_weight),
            "drop" => None,
            other => {
                return Err(format!(
                    "escalation.unregistered `{other}` is not keep or drop"
                ))
            }
        };
        if self.max_contributions == 0 {
            return Err("escalation.max_contributions must be at least 1".into());
        }
        Ok(crate::escalation::Settings {
            half_life_hours: self.half_life_hours,
            cutoff_half_lives: self.cutoff_half_lives,
            levels: self
                .levels
                .iter()
                .map(|l| crate::escalation::Level {
                    name: l.name.clone(),
                    at: l.at,
                    severity: l.severity.clone(),
                })
                .collect(),
            hysteresis: self.hysteresis,
            tier_weights: [
                w.head_of_state,
                w.foreign_ministry,
                w.embassy,
                w.state_media,
            ],
            unregistered_weight,
            de_escalation_categories: self.de_escalation_categories.clone(),
            reverse_tags: self.reverse_tags.clone(),
            reciprocity_categories: self.reciprocity_categories.clone(),
            reciprocity_window_hours: self.reciprocity_window_hours,
            de_escalation_notices: self.de_escalation_notices,
            max_contributions: self.max_contributions,
            max_cited: crate::escalation::Settings::default().max_cited,
        })
    }
}

impl Config {
    /// Read, parse and validate a file, then apply environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Self::parse(&text, path)?;
        c.apply_env(|k| std::env::var(k).ok());
        c.path = Some(path.to_path_buf());
        c.validate(path)?;
        Ok(c)
    }

    /// Parse TOML text (no environment, no validation).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " | "),
        })
    }

    /// Apply `ATTACHE_*` overrides (deployment settings that differ per environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("ATTACHE_HTTP_LISTEN") {
            self.http.listen = v;
        }
        if let Some(v) = get("ATTACHE_RULES_DIR") {
            self.rules.dir = v.into();
        }
        if let Some(v) = get("ATTACHE_INPUT_PATH") {
            self.input.path = Some(v.into());
        }
        if let Some(k) = &mut self.kafka {
            if let Some(v) = get("ATTACHE_KAFKA_BROKERS") {
                k.brokers = v;
            }
            if let Some(v) = get("ATTACHE_KAFKA_GROUP_ID") {
                k.group_id = v;
            }
            k.resolved_env = k
                .properties_env
                .iter()
                .filter_map(|(prop, var)| get(var).map(|v| (prop.clone(), v)))
                .collect();
        }
    }

    /// The validated sinks, routes, dedup window and dead-letter file, with secrets
    /// read from the environment.
    pub fn delivery_plan(
        &self,
    ) -> Result<crate::sink::config::DeliveryPlan, crate::sink::config::SinkConfigError> {
        crate::sink::config::validate(
            &self.sinks,
            &self.routes,
            &self.dedup,
            &self.dead_letter.clone().unwrap_or_default(),
            |k| std::env::var(k).ok(),
        )
    }

    /// Check values that serde cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match self.input.kind.as_str() {
            "sample" => {
                if crate::embedded::sample(&self.input.sample).is_none() {
                    let names: Vec<&str> =
                        crate::embedded::SAMPLES.iter().map(|(p, _)| *p).collect();
                    return Err(bad(format!(
                        "input.sample `{}` is not bundled (bundled: {})",
                        self.input.sample,
                        names.join(", ")
                    )));
                }
            }
            "file" => {
                if self.input.path.is_none() {
                    return Err(bad("input.kind = \"file\" needs input.path".into()));
                }
            }
            "stdin" => {}
            "kafka" => {
                if self.kafka.is_none() {
                    return Err(bad("input.kind = \"kafka\" needs a [kafka] section".into()));
                }
            }
            other => {
                return Err(bad(format!(
                    "input.kind `{other}` is not one of sample, file, stdin, kafka"
                )))
            }
        }
        if let Some(k) = &self.kafka {
            if k.topics.is_empty() && k.topic_pattern.is_none() {
                return Err(bad(
                    "kafka.topics is empty and no kafka.topic_pattern is set".into(),
                ));
            }
            for own in k.alerts_topic.iter().chain(k.dead_letter_topic.iter()) {
                if k.topic_pattern.is_none() && k.topics.contains(own) {
                    return Err(bad(format!(
                        "kafka.topics includes attaché's own output topic `{own}`: it would read its own alerts or dead letters"
                    )));
                }
            }
            if let Some(p) = &k.topic_pattern {
                let re =
                    regex::Regex::new(p).map_err(|e| bad(format!("kafka.topic_pattern: {e}")))?;
                for own in k.alerts_topic.iter().chain(k.dead_letter_topic.iter()) {
                    if re.is_match(own) {
                        return Err(bad(format!(
                            "kafka.topic_pattern `{p}` matches attaché's own output topic `{own}`: it would read its own alerts or dead letters; narrow the pattern"
                        )));
                    }
                }
            }
            if k.drain_timeout_ms >= k.session_timeout_ms {
                return Err(bad(format!(
                    "kafka.drain_timeout_ms ({}) must be shorter than kafka.session_timeout_ms ({})",
                    k.drain_timeout_ms, k.session_timeout_ms
                )));
            }
            for (prop, var) in &k.properties_env {
                if !k.resolved_env.iter().any(|(p, _)| p == prop) {
                    return Err(bad(format!(
                        "kafka.properties_env.{prop}: environment variable ${var} is not set"
                    )));
                }
            }
        }
        self.escalation.settings().map_err(bad)?;
        if (self.escalation.pairs_topic.is_some() || self.escalation.escalations_topic.is_some())
            && self.kafka.is_none()
        {
            return Err(bad(
                "escalation.pairs_topic / escalations_topic need a [kafka] section".into(),
            ));
        }
        if self.input.max_message_bytes == 0 {
            return Err(bad("input.max_message_bytes must be > 0".into()));
        }
        if self.pipeline.max_in_flight == 0 || self.pipeline.max_in_flight > u32::MAX as usize {
            return Err(bad(
                "pipeline.max_in_flight must be between 1 and 2^32-1".into()
            ));
        }
        if self.pipeline.channel_capacity == 0 {
            return Err(bad("pipeline.channel_capacity must be > 0".into()));
        }
        self.delivery_plan().map_err(|e| bad(e.to_string()))?;
        let addr: std::net::SocketAddr = self
            .http
            .listen
            .parse()
            .map_err(|e| bad(format!("http.listen `{}`: {e}", self.http.listen)))?;
        if !addr.ip().is_loopback() && self.http.enable_post && self.http.bearer_token_env.is_none()
        {
            return Err(bad(format!(
                "http.listen {addr} is beyond loopback: set http.bearer_token_env or http.enable_post = false"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.http.listen, DEFAULT_LISTEN);
        assert_eq!(c.input.kind, "sample");
    }

    #[test]
    fn unknown_keys_are_rejected_with_position() {
        let e = Config::parse(
            "[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("lisen") && s.contains("line 3"), "{s}");
    }

    #[test]
    fn reading_own_output_topics_is_refused() {
        let c = |extra: &str| {
            Config::parse(&format!("[input]\nkind = \"kafka\"\n[kafka]\nalerts_topic = \"alerts\"\ndead_letter_topic = \"posts.dlq\"\n{extra}"), Path::new("x"))
                .unwrap()
                .validate(Path::new("x"))
        };
        assert!(c("").is_ok());
        assert!(c("topics = [\"posts\", \"posts.dlq\"]\n").is_err());
        assert!(c("topic_pattern = \"^posts\\\\..*\"\n").is_err());
        assert!(c("topic_pattern = \"^posts-[a-z]+$\"\n").is_ok());
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "ATTACHE_HTTP_LISTEN").then(|| "127.0.0.1:1".to_string()));
        assert_eq!(c.http.listen, "127.0.0.1:1");
    }

    #[test]
    fn public_listen_needs_a_token_or_no_post() {
        let mut c = Config::default();
        c.http.listen = "0.0.0.0:9464".into();
        assert!(c.validate(Path::new("x")).is_err());
        c.http.enable_post = false;
        assert!(c.validate(Path::new("x")).is_ok());
    }
}
