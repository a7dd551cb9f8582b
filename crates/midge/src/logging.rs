//! Log lines as mosquitto writes them: `1700000000: New client connected from ...`.
use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct UnixSecondsFormat;

impl<S, N> FormatEvent<S, N> for UnixSecondsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        write!(writer, "{secs}: ")?;
        if *event.metadata().level() <= tracing::Level::WARN {
            write!(writer, "{}: ", event.metadata().level().as_str().to_lowercase())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Logs to standard error: information and above, or every packet with `verbose`.
/// `RUST_LOG` overrides the level.
pub fn init(verbose: bool) {
    // rustls narrates handshakes at debug level, and warns about what clients send (an IP
    // address as SNI, from mosquitto_pub -h 127.0.0.1): the broker logs TLS failures itself.
    let default = if verbose { "debug,rustls=error" } else { "info,rustls=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(UnixSecondsFormat)
        .init();
}
