//! `midge inspect`: MQTT in a capture file, or live on an interface (through tcpdump), as an
//! eavesdropper sees it; clear-text credentials reported.
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use midge_inspect::live::LiveCapture;
use midge_inspect::report::json::JsonPrinter;
use midge_inspect::report::text::TextPrinter;
use midge_inspect::{Config, InspectError, Sink, Summary};

/// Decode MQTT from packet captures and show what an eavesdropper sees.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Findings (credentials sent in clear text) are marked !!, notes (an encrypted stream, \
not decoded) --.\n\nExit status: 0 when nothing was found (notes allowed); 1 when a finding was \
reported, so that a script can use inspect as a check (as midge audit); 2 when the capture \
cannot be read or the command line is wrong."
)]
#[command(override_usage = "midge inspect [OPTIONS] FILE\n       midge inspect [OPTIONS] --interface IFACE")]
pub struct InspectArgs {
    /// A pcap or pcapng capture (`-` for standard input).
    #[arg(required_unless_present = "interface", conflicts_with = "interface")]
    file: Option<PathBuf>,
    /// Capture live on this interface (runs tcpdump; needs root or CAP_NET_RAW), until Ctrl-C.
    #[arg(short = 'i', long, value_name = "IFACE")]
    interface: Option<String>,
    /// Decode MQTT on this port too (1883 always); repeatable.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Every field and property of each packet.
    #[arg(short, long)]
    verbose: bool,
    /// JSON lines: one object per packet, finding and warning, then the summary.
    #[arg(long)]
    json: bool,
    /// Show passwords instead of ********.
    #[arg(long)]
    reveal: bool,
}

/// The exit code when a finding was reported.
const EXIT_FINDINGS: u8 = 1;
/// The exit code when the capture could not be read (as `midge audit`, and clap's usage errors).
const EXIT_ERROR: u8 = 2;

pub fn run(args: InspectArgs) -> ExitCode {
    let config = Config::with_ports(&args.ports);
    let live = args.interface.is_some();
    let stdout = io::stdout();
    let result = if args.json {
        let mut sink = JsonPrinter::new(BufWriter::new(stdout.lock()), args.reveal, live);
        run_with(&args, &config, &mut sink)
    } else {
        let out = BufWriter::new(stdout.lock());
        let mut sink = TextPrinter::new(out, io::stderr(), args.verbose, args.reveal, live);
        run_with(&args, &config, &mut sink)
    };
    match result {
        Ok(summary) if summary.has_problems() => ExitCode::from(EXIT_FINDINGS),
        Ok(_) => ExitCode::SUCCESS,
        // The reader went away (`midge inspect f | head`): not an error.
        Err(InspectError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge inspect: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run_with(args: &InspectArgs, config: &Config, sink: &mut dyn Sink) -> Result<Summary, InspectError> {
    if let Some(iface) = &args.interface {
        return live(iface, config, sink);
    }
    let Some(path) = &args.file else {
        return Err(InspectError::Io(io::Error::other("no capture file given")));
    };
    let input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        let file = File::open(path)
            .map_err(|e| InspectError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
        Box::new(file)
    };
    midge_inspect::inspect(input, config, sink)
}

/// Captures with tcpdump until SIGINT or SIGTERM, then prints the summary.
fn live(iface: &str, config: &Config, sink: &mut dyn Sink) -> Result<Summary, InspectError> {
    let mut capture = LiveCapture::start(iface, &config.all_ports())?;
    let stopper = capture.stopper();
    on_signal(move || stopper.stop())?;
    capture.wait_listening(Duration::from_secs(10))?;
    eprintln!("midge inspect: capturing on {iface} ({}); Ctrl-C to stop", capture.filter());
    let Some(pipe) = capture.take_stdout() else {
        return Err(InspectError::Io(io::Error::other("tcpdump's output is not readable")));
    };
    let decoded = midge_inspect::inspect(pipe, config, sink);
    // tcpdump's own failure (it stopped without writing a capture) explains an empty pipe.
    let end = capture.finish()?;
    let summary = match decoded {
        // Stopped before tcpdump wrote anything: nothing was captured.
        Err(InspectError::TruncatedHeader { got: 0 }) => {
            let empty = Summary::default();
            sink.summary(&empty)?;
            empty
        }
        other => other?,
    };
    if end.dropped > 0 {
        sink.warning(&format!(
            "tcpdump: {} packets dropped by the kernel: the capture misses them",
            end.dropped
        ))?;
    }
    io::stdout().flush()?;
    Ok(summary)
}

/// Runs `stop` on the first SIGINT or SIGTERM (tcpdump then ends the pipe and the summary is
/// printed); a second signal exits at once.
fn on_signal(stop: impl FnOnce() + Send + 'static) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        stop();
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        std::process::exit(130);
    });
    Ok(())
}
