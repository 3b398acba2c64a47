//! Panics are bugs. When one happens the broker logs it through `tracing`
//! (so JSON log collectors keep it), answers the call INTERNAL (see
//! `grpc::auth::Gate`), and keeps serving: each call runs in its own task.

use std::any::Any;

/// Logs every panic as an error event, then runs the previous hook (which
/// prints the usual message on stderr).
pub fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        tracing::error!(
            panic = payload_text(info.payload()),
            %location,
            "a bug: the broker panicked; the call it served is answered INTERNAL"
        );
        previous(info);
    }));
}

/// The message of a panic payload, when it is text.
pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}
