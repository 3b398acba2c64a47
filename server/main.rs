//! The `clerk-broker` binary: parse flags, set up logging, run a mode.
//!
//! Bad flags or configuration exit with status 64 (EX_USAGE) and one line
//! saying what to fix.

use std::process::ExitCode;

use clap::Parser;
use clerk_broker::{
    admission::Rate,
    callers::Policy,
    config::{Cli, Command, Config, FakeClerkArgs, LogFormat, default_margin},
    demo,
    fake::{FakeClerk, FakeClerkConfig, seed},
    logs::CallFormat,
    server, telemetry,
};
use tokio::net::TcpListener;

/// The allocator: mimalloc spends fewer cycles per call than the system's
/// on the broker's hot paths (measured by `scripts/bench-hot.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for bad flags or configuration (BSD's EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match clerk_broker::runtime::build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clerk-broker: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter's task and connection live on the runtime.
    let tracing = match runtime.block_on(async { logging(&cli) }) {
        Ok(tracing) => tracing,
        Err(error) => return usage(&error),
    };
    clerk_broker::panics::log_panics();
    if !clerk_broker::runtime::LIFO_SLOT_OFF {
        tracing::warn!(
            "built without `--cfg tokio_unstable` (.cargo/config.toml): the scheduler keeps its \
             LIFO slot, and answers are written one system call each"
        );
    }
    let code = runtime.block_on(run(cli.command));
    // The last spans (the drain's) are still queued: export them, briefly.
    if let Some(tracing) = tracing {
        runtime.block_on(tracing.shutdown());
    }
    code
}

/// Logs on stderr, and the OTel layer when an OTLP endpoint is set (the
/// tracing layer is not installed at all otherwise).
fn logging(cli: &Cli) -> Result<Option<telemetry::Tracing>, telemetry::TelemetryError> {
    use tracing_subscriber::fmt::format;
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    // Spans made for traces stay out of the logs: a line names its call
    // through `logs::in_call`, traced or not.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(
            format!("{}=off", telemetry::TRACE_TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        LogFormat::Text => logs
            .event_format(CallFormat::text(format().without_time().with_level(false)))
            .boxed(),
        LogFormat::Json => logs
            .json()
            .event_format(CallFormat::json(format().json().with_current_span(true)))
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    match cli
        .otlp_endpoint
        .as_deref()
        .filter(|endpoint| !endpoint.is_empty())
    {
        None => {
            registry.init();
            Ok(None)
        }
        Some(endpoint) => {
            let config =
                telemetry::TracingConfig::from_env(endpoint, |name| std::env::var(name).ok())?;
            let (layer, tracing) = telemetry::layer(&config)?;
            registry.with(layer).init();
            tracing::info!(endpoint, "exporting traces");
            Ok(Some(tracing))
        }
    }
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(args) => {
            let config = match Config::from_serve(&args, std::env::var("CLERK_SECRET_KEY").ok()) {
                Ok(config) => config,
                Err(error) => return usage(&error),
            };
            match server::Listeners::bind(&config).await {
                Ok(listeners) => {
                    tracing::info!(
                        listen = %config.listen,
                        http_listen = %config.lookup.http_listen,
                        budget = %config.upstream_rate,
                        "serving"
                    );
                    server::run(listeners, config, shutdown_signal())
                        .await
                        .map_err(|error| error.to_string())
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Command::Demo(args) => match demo::run(args, shutdown_signal()).await {
            Err(demo::DemoError::Config(error)) => return usage(&error),
            other => other.map_err(|error| error.to_string()),
        },
        Command::FakeClerk(args) => fake_clerk(args).await,
        Command::CheckConfig { file } => return check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clerk-broker: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("clerk-broker: {error}");
    ExitCode::from(EXIT_USAGE)
}

/// Validates a policy file: exit 0 with a summary, or 64 with every error.
fn check_config(file: &std::path::Path) -> ExitCode {
    match Policy::load(file, default_margin) {
        Ok(policy) => {
            let callers: Vec<String> = policy
                .callers()
                .iter()
                .map(|caller| format!("{} (weight {})", caller.name, caller.weight))
                .collect();
            let budgets: Vec<String> = policy
                .budgets
                .iter()
                .map(|(name, spec)| format!("{name} ({})", spec.rate))
                .collect();
            println!(
                "{}: valid; callers: {}; extra budgets: {}",
                file.display(),
                callers.join(", "),
                if budgets.is_empty() {
                    "none".to_owned()
                } else {
                    budgets.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs the fake Clerk alone; its key comes from CLERK_SECRET_KEY (or a
/// fixed test key, printed, when unset).
async fn fake_clerk(args: FakeClerkArgs) -> Result<(), String> {
    let rate: Option<Rate> = match &args.rate {
        Some(text) => Some(text.parse().map_err(|error| format!("--rate: {error}"))?),
        None => None,
    };
    let key = std::env::var("CLERK_SECRET_KEY").unwrap_or_else(|_| {
        println!("CLERK_SECRET_KEY is unset: the fake accepts sk_test_fake");
        "sk_test_fake".to_owned()
    });
    let mut config = FakeClerkConfig::new(key);
    config.rate_limit = rate.map(|rate| (rate.limit, rate.window));
    let fake = FakeClerk::new(config, seed::synthetic_users(args.users, demo::DEMO_SEED));
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    println!(
        "fake Clerk: http://{address}/v1 with {} users",
        fake.user_count()
    );
    fake.serve(listener, shutdown_signal())
        .await
        .map_err(|error| error.to_string())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the broker");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
