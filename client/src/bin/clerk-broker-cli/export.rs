//! `clerk-broker-cli export`: users to a JSON Lines file with a progress bar,
//! resumable after any interruption.
//!
//! After each message the users are appended and synced, then a checkpoint
//! (the message's resume token and the file length it matches) replaces
//! `OUT.resume` atomically (write a temporary file, sync, rename). A restart
//! truncates OUT to the checkpoint's length, dropping anything written after
//! it, and continues from its token, so the file ends up with every user
//! exactly once whenever the previous run stopped.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clerk_broker_client::{Client, pb};
use futures_util::TryStreamExt as _;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde_json::{Value, json};

use crate::{Failure, args::FilterArgs};

/// What to export, and where.
pub(crate) struct ExportJob {
    /// The output file.
    pub(crate) out: PathBuf,
    /// Which users.
    pub(crate) filter: FilterArgs,
    /// Sort order ("" for Clerk's default).
    pub(crate) order_by: String,
    /// Users per message.
    pub(crate) page_size: u32,
    /// Most users in this run.
    pub(crate) max_users: Option<u64>,
    /// Discard an existing file and checkpoint.
    pub(crate) overwrite: bool,
}

/// Where an interrupted export stands: the contents of `OUT.resume`.
#[derive(Debug, PartialEq)]
struct Checkpoint {
    /// Continue right after the last user in the file.
    resume_token: String,
    /// Length of the output file that the token matches.
    bytes: u64,
    /// Users in the file.
    users: u64,
    /// The export's filter and order: a resumed run must ask for the same.
    request: String,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Option<Self>, Failure> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Failure::io(path, &error)),
        };
        let broken = || {
            Failure::message(format!(
                "{} is not a resume file of this tool: remove it, or pass --overwrite",
                path.display()
            ))
        };
        let value: Value = serde_json::from_str(&text).map_err(|_| broken())?;
        let text_field = |name: &str| value[name].as_str().map(str::to_owned);
        Ok(Some(Self {
            resume_token: text_field("resume_token").ok_or_else(broken)?,
            bytes: value["bytes"].as_u64().ok_or_else(broken)?,
            users: value["users"].as_u64().ok_or_else(broken)?,
            request: text_field("request").ok_or_else(broken)?,
        }))
    }

    /// Replaces the checkpoint atomically: readers see the old or the new one.
    fn save(&self, path: &Path) -> io::Result<()> {
        let text = json!({
            "version": 1,
            "resume_token": self.resume_token,
            "bytes": self.bytes,
            "users": self.users,
            "request": self.request,
        })
        .to_string();
        let temporary = with_suffix(path, ".tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        fs::rename(&temporary, path)
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Runs the export; Ok once it is complete or stopped at `--max-users`.
pub(crate) async fn run(client: &Client, job: ExportJob) -> Result<(), Failure> {
    let sidecar = with_suffix(&job.out, ".resume");
    let fingerprint = format!("{:?} order_by={:?}", job.filter, job.order_by);
    let filter = job.filter.to_proto();
    let (mut file, mut checkpoint) = open_output(&job, &sidecar, &fingerprint)?;
    let request = match &checkpoint {
        Some(checkpoint) => pb::ListUsersRequest {
            resume_token: checkpoint.resume_token.clone(),
            ..Default::default()
        },
        None => pb::ListUsersRequest {
            filter: Some(filter.clone()),
            order_by: job.order_by.clone(),
            ..Default::default()
        },
    };
    let request = pb::ListUsersRequest {
        page_size: job.page_size,
        max_users: job.max_users.unwrap_or(0),
        ..request
    };
    let before = checkpoint.as_ref().map_or(0, |c| c.users);
    let progress = progress_bar(client, filter, before, job.max_users).await;
    let started = Instant::now();
    let mut users = client.export(request);
    let mut exported = 0;
    loop {
        let message = match users.try_next().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(error) => {
                progress.abandon();
                return Err(Failure::message(format!(
                    "export interrupted after {} users in {}: {error}; run the same command \
                     again to continue",
                    before + exported,
                    job.out.display()
                )));
            }
        };
        let mut lines = String::new();
        for user in &message.users {
            lines.push_str(&json_line(user));
            lines.push('\n');
        }
        file.write_all(lines.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|error| Failure::io(&job.out, &error))?;
        exported += message.users.len() as u64;
        let next = Checkpoint {
            resume_token: message.resume_token,
            bytes: checkpoint.as_ref().map_or(0, |c| c.bytes) + lines.len() as u64,
            users: before + exported,
            request: fingerprint.clone(),
        };
        next.save(&sidecar)
            .map_err(|error| Failure::io(&sidecar, &error))?;
        checkpoint = Some(next);
        progress.set_position(before + exported);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let rate = exported as f64 / elapsed.as_secs_f64().max(0.001);
    let total = before + exported;
    let out = job.out.display();
    if job.max_users.is_some_and(|limit| exported >= limit) {
        eprintln!(
            "exported {exported} users in {elapsed:.1?} ({rate:.0}/s); {total} in {out} so far: \
             stopped at --max-users, run again to continue"
        );
    } else {
        match fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(Failure::io(&sidecar, &error)),
        }
        eprintln!(
            "exported {exported} users in {elapsed:.1?} ({rate:.0}/s); export complete: \
             {total} users in {out}"
        );
    }
    Ok(())
}

/// Opens the output for appending: fresh, or cut back to the checkpoint of
/// an interrupted run of the same export.
fn open_output(
    job: &ExportJob,
    sidecar: &Path,
    fingerprint: &str,
) -> Result<(File, Option<Checkpoint>), Failure> {
    let out = &job.out;
    let io = |error: io::Error| Failure::io(out, &error);
    if job.overwrite {
        match fs::remove_file(sidecar) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(Failure::io(sidecar, &error));
            }
            _ => {}
        }
        return Ok((File::create(out).map_err(io)?, None));
    }
    let Some(checkpoint) = Checkpoint::load(sidecar)? else {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(io)?;
        if file.seek(SeekFrom::End(0)).map_err(io)? > 0 {
            return Err(Failure::message(format!(
                "{} already holds a finished export (there is no {}): pass --overwrite to \
                 export again",
                out.display(),
                sidecar.display()
            )));
        }
        return Ok((file, None));
    };
    if checkpoint.request != fingerprint {
        return Err(Failure::message(format!(
            "{} belongs to an export with other filters or order ({}): repeat those, or pass \
             --overwrite",
            sidecar.display(),
            checkpoint.request
        )));
    }
    let mut file = OpenOptions::new().write(true).open(out).map_err(io)?;
    let length = file.seek(SeekFrom::End(0)).map_err(io)?;
    if length < checkpoint.bytes {
        return Err(Failure::message(format!(
            "{} is shorter than its resume file says ({length} < {} bytes): it was changed; \
             pass --overwrite to export again",
            out.display(),
            checkpoint.bytes
        )));
    }
    // Drops what a killed run wrote after its last checkpoint.
    file.set_len(checkpoint.bytes).map_err(io)?;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    eprintln!(
        "resuming the export in {} after {} users",
        out.display(),
        checkpoint.users
    );
    Ok((file, Some(checkpoint)))
}

/// A progress bar on stderr (hidden when stderr is not a terminal): users so
/// far, rate and ETA against the total that `CountUsers` reports.
async fn progress_bar(
    client: &Client,
    filter: pb::UserFilter,
    before: u64,
    max_users: Option<u64>,
) -> ProgressBar {
    let total = match client.count_users(filter).await {
        Ok(total) => Some(max_users.map_or(total, |limit| total.min(before + limit))),
        // The export can go on without a total: the bar just shows no ETA.
        Err(_) => None,
    };
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:30} {human_pos}/{human_len} users  {rate}  ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {human_pos} users  {rate}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(
            style.with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                let _ = write!(out, "{:.0} users/s", state.per_sec());
            }),
        );
    }
    bar.set_position(before);
    bar.reset_eta();
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One user as one line of JSON: Clerk's own object, compacted if needed.
fn json_line(user: &pb::User) -> String {
    if user.raw_json.is_empty() {
        return json!({ "id": user.id }).to_string();
    }
    if !user.raw_json.contains('\n') {
        return user.raw_json.clone();
    }
    serde_json::from_str::<Value>(&user.raw_json)
        .map_or_else(|_| json!({ "id": user.id }).to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_survives_a_round_trip() {
        let dir = std::env::temp_dir().join(format!("cbc-checkpoint-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.jsonl.resume");
        let checkpoint = Checkpoint {
            resume_token: "abc.def".into(),
            bytes: 1234,
            users: 10,
            request: "filter".into(),
        };
        checkpoint.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(checkpoint));
        assert!(!with_suffix(&path, ".tmp").exists());
        fs::write(&path, "garbage").unwrap();
        assert!(Checkpoint::load(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn users_become_single_lines() {
        let user = pb::User {
            id: "user_1".into(),
            raw_json: "{\n  \"id\": \"user_1\"\n}".into(),
            ..Default::default()
        };
        assert_eq!(json_line(&user), r#"{"id":"user_1"}"#);
    }
}
