//! Log lines: the format `main` installs, and the call each line belongs to.
//!
//! Every gRPC call runs inside [`in_call`] (the metrics layer sets it up):
//! a task-local record of its method and, once the gate has admitted it,
//! its caller. A line logged while the call is served names both — in text,
//! `rpc{method=… caller=…}:` after the level; in JSON, a `call` object —
//! whatever else is in scope.
//!
//! A task-local costs a pointer swap per poll, where a `tracing` span per
//! call costs a registry slot, its fields formatted into a string, and an
//! enter and exit per poll: on the hot paths that was a fifth of a permit's
//! CPU. Spans remain for what is traced (`telemetry`), and logs leave them
//! out (`main` turns their target off).

use std::{
    fmt,
    future::Future,
    sync::{Arc, OnceLock},
};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    registry::LookupSpan,
};

tokio::task_local! {
    static CALL: Arc<Call>;
}

/// The call a log line belongs to.
#[derive(Debug)]
pub struct Call {
    /// The method label (as in the metrics).
    method: Arc<str>,
    /// The caller, once authenticated.
    caller: OnceLock<Arc<str>>,
}

impl Call {
    /// A call to `method`, its caller not yet known.
    pub fn new(method: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            method,
            caller: OnceLock::new(),
        })
    }
}

/// Runs `work` (the synchronous part of a call: its service's `call`) as
/// part of `call`.
pub fn in_call_sync<R>(call: Arc<Call>, work: impl FnOnce() -> R) -> R {
    CALL.sync_scope(call, work)
}

/// `future`, whose polls are part of `call`.
pub fn in_call<F: Future>(call: Arc<Call>, future: F) -> impl Future<Output = F::Output> {
    CALL.scope(call, future)
}

/// Records the caller of the call being served, if any (the first wins).
pub fn record_caller(caller: &Arc<str>) {
    let _ = CALL.try_with(|call| {
        let _ = call.caller.set(caller.clone());
    });
}

/// The event format of the broker's logs: `inner` (tracing-subscriber's
/// text format without time and level, or its JSON format), with the call
/// the line belongs to.
#[derive(Debug)]
pub struct CallFormat<F> {
    inner: F,
    json: bool,
}

impl<F> CallFormat<F> {
    /// Text lines: time, level, the call, then what `inner` writes (it
    /// must write neither time nor level).
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// JSON lines: what `inner` writes (one object), with a `call` member.
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for CallFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let call = CALL.try_with(Arc::clone).ok();
        if self.json {
            let Some(call) = call else {
                return self.inner.format_event(ctx, writer, event);
            };
            let mut line = String::new();
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let Some(members) = line.strip_prefix('{') else {
                return writer.write_str(&line);
            };
            write!(
                writer,
                "{{\"call\":{{\"method\":{}",
                json_string(&call.method)
            )?;
            if let Some(caller) = call.caller.get() {
                write!(writer, ",\"caller\":{}", json_string(caller))?;
            }
            return write!(writer, "}},{members}");
        }
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str("\x1b[2m")?;
        }
        SystemTime.format_time(&mut writer)?;
        if ansi {
            writer.write_str("\x1b[0m")?;
        }
        write_level(&mut writer, *event.metadata().level(), ansi)?;
        if let Some(call) = call {
            write!(writer, "rpc{{method={}", call.method)?;
            if let Some(caller) = call.caller.get() {
                write!(writer, " caller={caller}")?;
            }
            writer.write_str("}: ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// ` LEVEL ` as tracing-subscriber writes it (right-aligned, coloured).
fn write_level(writer: &mut Writer<'_>, level: Level, ansi: bool) -> fmt::Result {
    let colour = match level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    };
    if ansi {
        write!(writer, " \x1b[{colour}m{level:>5}\x1b[0m ")
    } else {
        write!(writer, " {level:>5} ")
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt as _};

    use super::*;

    /// Lines written by a subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs a line outside any call, then one in a call whose caller is
    /// known, through a subscriber writing with `json` or text lines.
    async fn two_lines(json: bool) -> String {
        let lines = Lines::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(lines.clone())
            .with_ansi(false);
        let subscriber: Box<dyn Subscriber + Send + Sync> = if json {
            Box::new(
                tracing_subscriber::registry().with(
                    layer
                        .json()
                        .event_format(CallFormat::json(tracing_subscriber::fmt::format().json())),
                ),
            )
        } else {
            Box::new(
                tracing_subscriber::registry().with(
                    layer.event_format(CallFormat::text(
                        tracing_subscriber::fmt::format()
                            .without_time()
                            .with_level(false),
                    )),
                ),
            )
        };
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::warn!(id = 7, "outside");
        let call = Call::new(Arc::from("/clerk_broker.v1.UserService/GetUser"));
        in_call(call, async {
            record_caller(&Arc::from("billing \"eu\""));
            tokio::task::yield_now().await;
            tracing::info!(id = 8, "inside");
        })
        .await;
        lines.text()
    }

    #[tokio::test]
    async fn text_lines_in_a_call_name_its_method_and_caller() {
        let text = two_lines(false).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with("  WARN clerk_broker::logs::tests: outside id=7"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(
                "  INFO rpc{method=/clerk_broker.v1.UserService/GetUser caller=billing \"eu\"}: \
                 clerk_broker::logs::tests: inside id=8"
            ),
            "{text}"
        );
        // Both start with the time.
        assert!(lines.iter().all(|line| line.starts_with("20")), "{text}");
    }

    #[tokio::test]
    async fn json_lines_in_a_call_carry_a_call_object() {
        let text = two_lines(true).await;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["fields"]["message"], "outside");
        assert!(lines[0].get("call").is_none(), "{text}");
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(
            lines[1]["call"],
            serde_json::json!({
                "method": "/clerk_broker.v1.UserService/GetUser",
                "caller": "billing \"eu\"",
            })
        );
    }
}
