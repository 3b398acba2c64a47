//! `clerk-broker-cli` end to end: the binary against an in-process broker.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use tokio::process::Command;

use crate::harness::{Broker, Options, TOKEN, start, token_policy};

/// Runs the CLI against `broker` with `args` (and the token, if any).
async fn cli(broker: &Broker, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-broker-cli"));
    command
        .args(args)
        .env("CLERK_BROKER_URL", broker.url())
        .env_remove("CLERK_BROKER_TOKEN");
    if let Some(token) = token {
        command.env("CLERK_BROKER_TOKEN", token);
    }
    command.output().await.expect("the CLI runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An empty directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clerk-broker-cli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The `id` of every line of a JSON Lines export, in order.
fn exported_ids(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("the export file")
        .lines()
        .map(|line| {
            let user: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            user["id"].as_str().expect("an id").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn get_count_and_permit_print_what_people_need() {
    let (upstream, broker) = start(Options::default()).await;
    let id = upstream.ids[0].as_str();

    let got = cli(&broker, None, &["get", id]).await;
    assert!(got.status.success(), "{}", stderr(&got));
    let user: serde_json::Value = serde_json::from_str(stdout(&got).trim()).unwrap();
    assert_eq!(user["id"], id);

    let missing = cli(&broker, None, &["get", id, "user_doesnotexist"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing).lines().count(), 1);
    assert!(
        stderr(&missing).contains("NOT_FOUND: no such user: user_doesnotexist"),
        "{}",
        stderr(&missing)
    );

    let count = cli(&broker, None, &["count"]).await;
    assert_eq!(stdout(&count).trim(), "1000", "{}", stderr(&count));
    let count = cli(&broker, None, &["count", "--user-id", id]).await;
    assert_eq!(stdout(&count).trim(), "1", "{}", stderr(&count));

    let permit = cli(&broker, None, &["permit", "--cost", "2", "--wait", "1s"]).await;
    assert!(permit.status.success(), "{}", stderr(&permit));
    assert!(stdout(&permit).starts_with("granted on budget clerk"));

    let bad = cli(&broker, None, &["permit", "--wait", "soon"]).await;
    assert_eq!(bad.status.code(), Some(2));
    broker.stop().await;
}

#[tokio::test]
async fn the_token_comes_from_the_environment_and_is_never_printed() {
    let (upstream, broker) = start(Options {
        policy: token_policy(),
        ..Options::default()
    })
    .await;
    let id = upstream.ids[0].as_str();
    let help = cli(&broker, Some(TOKEN), &["--help"]).await;
    assert!(help.status.success());
    assert!(stdout(&help).contains("CLERK_BROKER_TOKEN"));
    assert!(!stdout(&help).contains(TOKEN), "{}", stdout(&help));

    let anonymous = cli(&broker, None, &["get", id]).await;
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(stderr(&anonymous).contains("UNAUTHENTICATED"));
    assert!(stderr(&anonymous).contains("CLERK_BROKER_TOKEN"));

    let wrong = cli(&broker, Some("not-the-token-xyz"), &["get", id]).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(!stderr(&wrong).contains("not-the-token-xyz"));

    let got = cli(&broker, Some(TOKEN), &["get", id]).await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(!stdout(&got).contains(TOKEN) && !stderr(&got).contains(TOKEN));

    // "writes" allows 2 per second: the third permit without waiting is refused.
    let writes = ["permit", "--budget", "writes"];
    for _ in 0..2 {
        let granted = cli(&broker, Some(TOKEN), &writes).await;
        assert!(granted.status.success(), "{}", stderr(&granted));
    }
    let refused = cli(&broker, Some(TOKEN), &writes).await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("retry after"),
        "{}",
        stderr(&refused)
    );
    broker.stop().await;
}

#[tokio::test]
async fn an_interrupted_export_resumes_where_the_file_ends() {
    let (upstream, broker) = start(Options {
        users: 1_000,
        ..Options::default()
    })
    .await;
    let dir = scratch("export");
    let whole = dir.join("whole.jsonl");
    let parts = dir.join("users.jsonl");
    let sidecar = dir.join("users.jsonl.resume");
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "export".to_owned(),
            "--out".to_owned(),
            out.display().to_string(),
            "--order-by".to_owned(),
            "+created_at".to_owned(),
            "--page-size".to_owned(),
            "100".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let run = |args: Vec<String>| {
        let broker = &broker;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(broker, None, &args).await
        }
    };

    let full = run(export(&whole, &[])).await;
    assert!(full.status.success(), "{}", stderr(&full));
    assert!(
        stderr(&full).contains("export complete: 1000 users"),
        "{}",
        stderr(&full)
    );
    let reference = exported_ids(&whole);
    assert_eq!(reference.len(), 1_000);

    // Interrupted twice by a limit, then by a crash after a partial line.
    let first = run(export(&parts, &["--max-users", "250"])).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stderr(&first).contains("run again to continue"));
    assert_eq!(exported_ids(&parts), reference[..250]);
    assert!(sidecar.exists());
    let second = run(export(&parts, &["--max-users", "330"])).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("after 250 users"),
        "{}",
        stderr(&second)
    );
    assert_eq!(exported_ids(&parts), reference[..580]);
    let mut file = fs::OpenOptions::new().append(true).open(&parts).unwrap();
    std::io::Write::write_all(&mut file, b"{\"id\":\"user_half_writ").unwrap();
    drop(file);

    // Other filters cannot continue this export.
    let other = run(export(&parts, &["--email-query", "example"])).await;
    assert_eq!(other.status.code(), Some(1));
    assert!(
        stderr(&other).contains("other filters"),
        "{}",
        stderr(&other)
    );

    let last = run(export(&parts, &[])).await;
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(
        stderr(&last).contains("export complete: 1000 users"),
        "{}",
        stderr(&last)
    );
    assert!(!sidecar.exists());
    let ids = exported_ids(&parts);
    assert_eq!(ids, reference);
    let unique: HashSet<_> = ids.iter().collect();
    let all: HashSet<_> = upstream.ids.iter().collect();
    assert_eq!(unique, all);

    // A finished export is not appended to by accident.
    let again = run(export(&parts, &[])).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));
    let overwrite = run(export(&parts, &["--overwrite", "--max-users", "10"])).await;
    assert!(overwrite.status.success(), "{}", stderr(&overwrite));
    assert_eq!(exported_ids(&parts), reference[..10]);

    broker.stop().await;
    let _ = fs::remove_dir_all(&dir);
}
