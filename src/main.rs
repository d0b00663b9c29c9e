//! The `attache` command line: a thin layer over the library (DESIGN §6).

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use attache::commands::{eval, explain, scan};
use attache::decode::{decode, Limits};
use attache::rules::{self, examples, LoadError, RuleSet};

/// attaché — early warning of diplomatic crises from official government posts.
#[derive(Parser)]
#[command(name = "attache", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "ATTACHE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service. Without --config: the bundled sample stream with ./rules,
    /// alerts on stdout, HTTP on 127.0.0.1:9464, exit when the stream ends.
    Run {
        /// TOML configuration file (see config/).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Keep serving HTTP after a finite input ends (readiness stays 200).
        #[arg(long)]
        follow: bool,
        /// HTTP address for /metrics, /healthz, /readyz, /rules, /explain.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Validate rule files; report every error as file:line:column. Exit 1 on error.
    Check {
        /// Rules directory.
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// Run the examples embedded in rule files. Exit 1 when one fails.
    Test {
        /// Rules directory.
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// JSON-lines posts in, per-post alerts out (one per line, never deduplicated).
    Scan {
        /// Rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Add the matched lists and the rule's location to each alert.
        #[arg(long)]
        explain: bool,
        /// Write undecodable lines here (JSON lines with reason and line number)
        /// instead of stderr.
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Largest line accepted, in bytes.
        #[arg(long, default_value_t = attache::decode::DEFAULT_MAX_BYTES)]
        max_bytes: usize,
        /// Matching threads (default: the machine's cores). Output order is the
        /// input order whatever the number.
        #[arg(long)]
        threads: Option<usize>,
        /// Input file; `-` for stdin.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Show which rules fire on a text or post, and why, with evidence spans.
    Explain {
        /// Rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// The post text.
        #[arg(long, conflicts_with = "post")]
        text: Option<String>,
        /// A whole post as canonical JSON.
        #[arg(long)]
        post: Option<String>,
        /// Media caption to attach (implies an image).
        #[arg(long)]
        caption: Option<String>,
        /// Account country of the post.
        #[arg(long)]
        country: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The escalation index per pair of states: replay posts in event time and print
    /// the levels reached with their evidence (and, with --timeline, every escalation
    /// alert in order); or print a running instance's /pairs (--url).
    Pairs {
        /// Rules directory (with the account registry).
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Configuration file whose `[escalation]` section to use (default: built-in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also print the escalation alerts in order: the level timeline.
        #[arg(long)]
        timeline: bool,
        /// Print JSON (`{"pairs": […], "escalations": […]}`) instead of text.
        #[arg(long)]
        json: bool,
        /// Evidence lines per pair in the text output.
        #[arg(long, default_value_t = 5)]
        evidence: usize,
        /// Base URL of a running instance (http://127.0.0.1:9464): print its /pairs.
        #[arg(long, conflicts_with = "inputs")]
        url: Option<String>,
        /// JSON-lines post files, in order (`-` for stdin).
        inputs: Vec<String>,
    },
    /// Dead letters: re-send alerts a sink gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Routing: show which sinks an alert would go to.
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Precision, recall and F1 per category on a labelled JSON-lines file, with
    /// every false positive and negative.
    Eval {
        /// Rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Print only the table, not the errors.
        #[arg(long)]
        quiet: bool,
        /// Labelled posts (`labels: [...]` per line).
        labeled: PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Re-send every failed-delivery record of FILE through its sink (or --sink) as
    /// configured in --config. The input is never modified; records that fail again go
    /// to --out (default FILE.replay-<time>.jsonl). Exit 1 unless all were delivered.
    Replay {
        /// The configuration with the sinks.
        #[arg(long, short)]
        config: PathBuf,
        /// Send everything through this sink instead.
        #[arg(long)]
        sink: Option<String>,
        /// Where records that fail again go.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The dead-letter file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Print the routes and sinks an alert would go to. The alert is a JSON file (an
    /// alert as emitted, e.g. one line of `attache scan`); without one, a sample alert
    /// with --category/--severity/--actor/--target.
    Test {
        /// The configuration with sinks and routes.
        #[arg(long, short)]
        config: PathBuf,
        /// An alert JSON file.
        #[arg(long)]
        alert: Option<PathBuf>,
        /// Category of the sample alert.
        #[arg(long)]
        category: Option<String>,
        /// Severity of the sample alert.
        #[arg(long)]
        severity: Option<String>,
        /// Actor of the sample alert.
        #[arg(long)]
        actor: Option<String>,
        /// Target of the sample alert.
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a configuration file (environment overrides applied);
    /// exit 1 with the reason when it is not usable.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `[log] json = true` in the config file also switches to JSON logs.
    let json_from_config = match &cli.command {
        Command::Run {
            config: Some(p), ..
        } => attache::config::Config::load(p).is_ok_and(|c| c.log.json),
        _ => false,
    };
    attache::telemetry::init_logging(cli.log_json || json_from_config);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Print to stdout; a closed pipe (`… | head`) is not an error.
fn write_stdout(text: &str) -> Result<ExitCode> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn load(dir: &Path) -> Result<RuleSet> {
    match rules::load_dir(dir) {
        Ok(r) => Ok(r),
        Err(e @ LoadError::Invalid(_)) => Err(anyhow::anyhow!("{e}")),
        Err(e) => Err(e).context("loading rules"),
    }
}

fn dispatch(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run {
            config,
            follow,
            listen,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(attache::pipeline::main(config, follow, listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { rules: dir } => match rules::load_dir(&dir) {
            Ok(rs) => {
                println!(
                    "ok: {} rules ({} enabled) in {} files, {} terms, version {}, {} registered accounts",
                    rs.rules.len(),
                    rs.enabled(),
                    rs.files.len(),
                    rs.patterns,
                    rs.version,
                    rs.registry.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(LoadError::Invalid(diags)) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                eprintln!("{} error(s)", diags.len());
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Test { rules: dir } => {
            let rs = match rules::load_dir(&dir) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(1));
                }
            };
            let rep = examples::run(&rs);
            for f in &rep.failures {
                eprintln!("FAIL {f}");
            }
            for r in &rep.rules_without_examples {
                eprintln!("warning: rule `{r}` has no examples");
            }
            println!(
                "{} passed, {} failed ({} examples in {} rules)",
                rep.passed,
                rep.failures.len(),
                rep.run,
                rs.rules.len()
            );
            Ok(if rep.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Scan {
            rules: dir,
            explain,
            dead_letter,
            max_bytes,
            threads,
            input,
        } => {
            let rs = load(&dir)?;
            let opts = scan::Options {
                explain,
                limits: Limits { max_bytes },
                name: input.clone(),
                threads: threads
                    .unwrap_or_else(|| {
                        std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(1)
                    })
                    .max(1),
            };
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut dead: Box<dyn Write> = match &dead_letter {
                Some(p) => Box::new(BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(io::stderr()),
            };
            // Big reads: a line that lies whole in the buffer is matched without a copy.
            let reader: Box<dyn BufRead> = if input == "-" {
                Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
            } else {
                Box::new(BufReader::with_capacity(
                    1 << 20,
                    std::fs::File::open(&input).with_context(|| format!("opening {input}"))?,
                ))
            };
            let stats = match scan::scan(&rs, reader, &mut out, &mut *dead, &opts) {
                Ok(s) => s,
                // A closed stdout (`attache scan … | head`) ends the scan quietly.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(e).context("scanning"),
            };
            tracing::info!(
                lines = stats.lines,
                posts = stats.posts,
                alerts = stats.alerts,
                dead_letters = stats.dead_letters,
                "scan done"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pairs {
            rules: dir,
            config,
            timeline,
            json,
            evidence,
            url,
            inputs,
        } => {
            use attache::commands::pairs;
            if let Some(url) = url {
                let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
                let u = format!("{}/pairs", url.trim_end_matches('/'));
                let body: serde_json::Value = rt.block_on(async {
                    let r = reqwest::get(&u).await.with_context(|| format!("GET {u}"))?;
                    let status = r.status();
                    let v: serde_json::Value = r
                        .json()
                        .await
                        .with_context(|| format!("GET {u}: not JSON"))?;
                    if !status.is_success() {
                        anyhow::bail!("GET {u}: {status}: {}", v["error"].as_str().unwrap_or(""));
                    }
                    Ok(v)
                })?;
                let text = if json {
                    serde_json::to_string_pretty(&body)? + "\n"
                } else {
                    let ps: Vec<attache::escalation::PairView> =
                        serde_json::from_value(body["pairs"].clone()).context("reading /pairs")?;
                    format!(
                        "as of {}\n{}",
                        body["as_of"].as_str().unwrap_or("-"),
                        pairs::render_pairs(&ps, evidence)
                    )
                };
                return write_stdout(&text);
            }
            if inputs.is_empty() {
                anyhow::bail!("give post files to replay (or --url of a running instance)");
            }
            let cfg = match &config {
                Some(p) => attache::config::Config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
                None => attache::config::Config::default(),
            };
            let settings = cfg
                .escalation
                .settings()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let rs = load(&dir)?;
            let mut rep = pairs::Replay::default();
            for input in &inputs {
                let reader: Box<dyn BufRead> = if input == "-" {
                    Box::new(BufReader::new(io::stdin()))
                } else {
                    Box::new(BufReader::new(
                        std::fs::File::open(input).with_context(|| format!("opening {input}"))?,
                    ))
                };
                pairs::replay(&rs, &settings, reader, input, &Limits::default(), &mut rep)
                    .with_context(|| format!("reading {input}"))?;
            }
            let view = rep.index.view(None, &settings);
            if json {
                let v = serde_json::json!({
                    "schema": "attache.pairs.v1",
                    "as_of": rep.index.watermark().map(attache::alert::rfc3339),
                    "posts": rep.posts, "alerts": rep.alerts, "undecodable": rep.undecodable,
                    "pairs": view, "escalations": rep.escalations,
                });
                write_stdout(&(serde_json::to_string_pretty(&v)? + "\n"))
            } else {
                let mut text = String::new();
                if timeline {
                    text += &pairs::render_timeline(&rep.escalations);
                    text += "\n";
                }
                text += &format!(
                    "{} posts, {} alerts, {} escalation alerts; as of {}\n",
                    rep.posts,
                    rep.alerts,
                    rep.escalations.len(),
                    rep.index
                        .watermark()
                        .map(attache::alert::rfc3339)
                        .unwrap_or_else(|| "-".into())
                );
                text += &pairs::render_pairs(&view, evidence);
                write_stdout(&text)
            }
        }
        Command::Explain {
            rules: dir,
            text,
            post,
            caption,
            country,
            json,
        } => {
            let rs = load(&dir)?;
            let raw = match (post, text) {
                (Some(p), _) => p,
                (None, Some(t)) => {
                    let mut v = serde_json::json!({"id": "explain", "platform": "cli", "text": t});
                    if let Some(c) = caption {
                        v["media"] = serde_json::json!([{"type": "image", "caption": c}]);
                    }
                    if let Some(c) = country {
                        v["account"] = serde_json::json!({"country": c});
                    }
                    v.to_string()
                }
                (None, None) => anyhow::bail!("give --text \"…\" or --post '{{json}}'"),
            };
            let mut post =
                decode(raw.as_bytes(), &Limits::default()).context("decoding the post")?;
            rs.registry.enrich(&mut post);
            let traces = explain::traces(&rs, &post);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&explain::render_json(&rs, &post, &traces))?
                );
            } else {
                print!("{}", explain::render_text(&rs, &post, &traces));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    sink,
                    out,
                    file,
                },
        } => {
            let cfg = attache::config::Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let plan = cfg.delivery_plan().map_err(|e| anyhow::anyhow!("{e}"))?;
            let out = out.unwrap_or_else(|| attache::deadletter::replay_output_path(&file));
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let rep = rt.block_on(async {
                let failed = attache::deadletter::DeadLetters::file(&out)?;
                let opts = attache::deadletter::ReplayOptions {
                    sink,
                    failed,
                    in_flight: 64,
                };
                Ok::<_, anyhow::Error>(
                    attache::deadletter::replay_file(
                        &file,
                        &plan.sinks,
                        opts,
                        &attache::telemetry::Metrics::new(),
                    )
                    .await?,
                )
            })?;
            println!("{rep}");
            if rep.dead_lettered == 0 {
                let _ = std::fs::remove_file(&out);
            } else {
                println!("records that failed again: {}", out.display());
            }
            Ok(if rep.all_delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Routes {
            command:
                RoutesCommand::Test {
                    config,
                    alert,
                    category,
                    severity,
                    actor,
                    target,
                },
        } => {
            let cfg = attache::config::Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let plan = cfg.delivery_plan().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut a = match alert {
                Some(p) => serde_json::from_slice::<attache::alert::Alert>(
                    &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("{} is not an alert", p.display()))?,
                None => attache::sink::config::sample_alert(),
            };
            if let Some(c) = category {
                a.rule.category = c;
            }
            if let Some(s) = severity {
                a.rule.severity = s;
            }
            if let Some(x) = actor {
                a.actor = Some(x);
            }
            if let Some(t) = target {
                a.targets = vec![t];
            }
            println!(
                "alert: rule {} category {} severity {} actor {} targets {:?}",
                a.rule.id,
                a.rule.category,
                a.rule.severity,
                a.actor.as_deref().unwrap_or("-"),
                a.targets
            );
            let a: attache::sink::Outgoing = a.into();
            let routes = plan.router.matching_routes(&a);
            println!("matching routes (in order): {routes:?}");
            let sinks: Vec<&str> = plan
                .router
                .sinks(&a)
                .into_iter()
                .map(|i| plan.sinks[i].name.as_str())
                .collect();
            println!(
                "sinks: {}",
                if sinks.is_empty() {
                    "(none)".to_string()
                } else {
                    sinks.join(", ")
                }
            );
            if cfg.output.stdout {
                println!("also: stdout (every alert)");
            }
            if cfg.kafka.as_ref().is_some_and(|k| k.alerts_topic.is_some()) {
                println!("also: the Kafka alerts topic (every alert)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match attache::config::Config::load(&file) {
            Ok(c) => {
                println!(
                    "ok: input {}, rules {}, http {}",
                    c.input.kind,
                    c.rules.dir.display(),
                    c.http.listen
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Eval {
            rules: dir,
            quiet,
            labeled,
        } => {
            let rs = load(&dir)?;
            let f = std::fs::File::open(&labeled)
                .with_context(|| format!("opening {}", labeled.display()))?;
            let rep = eval::evaluate(&rs, BufReader::new(f))?;
            print!("{}", eval::render(&rep, !quiet));
            Ok(ExitCode::SUCCESS)
        }
    }
}
