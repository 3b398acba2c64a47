//! `clerk-broker-cli`: the broker from a shell. `get` users, take a `permit`,
//! `count` users, `export` them to a resumable JSON Lines file.
//!
//! Exit status: 0 done; 1 the call failed (one line on stderr says why and
//! what to do); 2 bad usage; 3 a permit was refused.

mod args;
mod export;

use std::{path::Path, process::ExitCode};

use clap::Parser as _;
use clerk_broker_client::{Client, Error, PermitRequest, code_name};

use args::{Cli, Command};

/// Why the command failed: a line for stderr and an exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// A failure described in one line (exit 1).
    pub(crate) fn message(message: String) -> Self {
        Self { message, status: 1 }
    }

    /// A file could not be read or written.
    pub(crate) fn io(path: &Path, error: &std::io::Error) -> Self {
        Self::message(format!("{}: {error}", path.display()))
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let hint = match (error.retry_after(), error.code()) {
            (Some(delay), _) => format!(" (retry after {delay:.1?})"),
            (None, Some(tonic::Code::Unauthenticated)) => {
                " (set CLERK_BROKER_TOKEN to this caller's token)".to_owned()
            }
            _ => String::new(),
        };
        Self::message(format!("{error}{hint}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clerk-broker-cli: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("clerk-broker-cli: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = Client::builder(cli.url)
        .token_opt(cli.token)
        .deadline(cli.timeout)
        .connect()
        .await?;
    match cli.command {
        Command::Get { ids } => get(&client, ids).await,
        Command::Permit {
            budget,
            cost,
            wait,
            bulk,
        } => {
            let mut request = PermitRequest::new(cost).budget(budget).wait(wait);
            if bulk {
                request = request.bulk();
            }
            permit(&client, request).await
        }
        Command::Count { filter } => {
            println!("{}", client.count_users(filter.to_proto()).await?);
            Ok(())
        }
        Command::Export {
            out,
            filter,
            order_by,
            page_size,
            max_users,
            overwrite,
        } => {
            let job = export::ExportJob {
                out,
                filter,
                order_by,
                page_size,
                max_users,
                overwrite,
            };
            export::run(&client, job).await
        }
    }
}

/// Prints each user found as one line of JSON; fails if any id is unknown.
async fn get(client: &Client, ids: Vec<String>) -> Result<(), Failure> {
    let answer = client.batch_get_users(ids).await?;
    for user in &answer.users {
        println!("{}", user.raw_json.replace('\n', ""));
    }
    if answer.missing_user_ids.is_empty() {
        Ok(())
    } else {
        Err(Failure::message(format!(
            "{}: no such user: {}",
            code_name(tonic::Code::NotFound),
            answer.missing_user_ids.join(", ")
        )))
    }
}

/// Takes a permit and says so; exit 3 when refused.
async fn permit(client: &Client, request: PermitRequest) -> Result<(), Failure> {
    match client.acquire_permit(request).await {
        Ok(grant) => {
            println!(
                "granted on budget {} ({} per {:?}) after {:.1?}",
                grant.budget, grant.limit, grant.window, grant.waited
            );
            Ok(())
        }
        Err(Error::PermitRefused {
            budget,
            retry_after,
        }) => Err(Failure {
            message: format!("refused on budget {budget:?}: retry after {retry_after:.1?}"),
            status: 3,
        }),
        Err(error) => Err(error.into()),
    }
}
