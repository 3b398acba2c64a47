//! The binary's flags: bad configuration exits 64 with one clear line, and
//! never echoes the secret key.

use std::process::{Command, Output};

fn broker(args: &[&str], key: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-broker"));
    command.args(args).env_remove("CLERK_SECRET_KEY");
    if let Some(key) = key {
        command.env("CLERK_SECRET_KEY", key);
    }
    command.output().unwrap()
}

#[test]
fn bad_configuration_exits_64_with_a_clear_line() {
    let secret = "sk_live_do_not_print_me_123";
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&["serve"], None, "no Clerk secret key"),
        (
            &["serve"],
            Some("pk_live_abc"),
            "must start with sk_live_ or sk_test_",
        ),
        (
            &["serve", "--upstream-rate", "lots"],
            Some(secret),
            "--upstream-rate",
        ),
        (
            &["serve", "--listen", "somewhere"],
            Some(secret),
            "--listen",
        ),
        (&["serve", "--no-such-flag"], Some(secret), "--no-such-flag"),
    ];
    for (args, key, expected) in cases {
        let output = broker(args, key);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("do_not_print_me"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn help_exits_zero_and_names_every_mode() {
    let output = broker(&["--help"], None);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for mode in ["serve", "demo", "fake-clerk"] {
        assert!(help.contains(mode), "{help}");
    }
}

#[test]
fn bad_tracing_settings_exit_64_naming_the_setting() {
    let cases = [
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ][..],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ][..],
            "not a url",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ][..],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_TRACES_SAMPLER", "parentbased_sometimes"),
            ][..],
            "OTEL_TRACES_SAMPLER=",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ][..],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ];
    for (env, expected) in cases {
        // A setting taken for good fails on the listen address instead.
        let output = Command::new(env!("CARGO_BIN_EXE_clerk-broker"))
            .args(["serve", "--listen", "not-an-address"])
            .env("CLERK_SECRET_KEY", "sk_test_do_not_print_me_123")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("do_not_print_me"), "{stderr}");
    }
}
