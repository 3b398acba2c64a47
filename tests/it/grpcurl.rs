//! The demo's printed grpcurl commands work as printed, through reflection,
//! with no `.proto` file at hand.

use std::{process::Command, time::Duration};

use crate::harness::demo_process;

#[test]
fn every_printed_grpcurl_command_works() {
    let found = Command::new("grpcurl").arg("-version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "grpcurl is not installed: run ./scripts/test.sh, which installs it"
    );
    let (mut child, address, lines) = demo_process();
    let mut commands = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if line.starts_with("grpcurl ") {
            commands.push(line);
        }
    }
    assert!(commands.len() >= 8, "{commands:?}");
    for command in &commands {
        assert!(command.contains(&address));
        let output = Command::new("sh").args(["-c", command]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{command}\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = if command.ends_with(" list") {
            "clerk_broker.v1.UserService"
        } else if command.contains(" describe ") {
            "rpc GetUser"
        } else if command.contains("Health/Check") {
            "SERVING"
        } else if command.contains("/GetUser") || command.contains("/BatchGetUsers") {
            "\"id\": \"user_"
        } else if command.contains("/ListUsers") {
            "resumeToken"
        } else if command.contains("/CountUsers") {
            "totalCount"
        } else {
            "\"granted\": true"
        };
        assert!(stdout.contains(expected), "{command}\n{stdout}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
