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
use midge_inspect::{Config, InspectError, Sink};

/// Decode MQTT from packet captures and show what an eavesdropper sees.
#[derive(clap::Args, Debug)]
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
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`midge inspect f | head`): not an error.
        Err(InspectError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge inspect: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_with(args: &InspectArgs, config: &Config, sink: &mut dyn Sink) -> Result<(), InspectError> {
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
    midge_inspect::inspect(input, config, sink).map(|_| ())
}

/// Captures with tcpdump until SIGINT or SIGTERM, then prints the summary.
fn live(iface: &str, config: &Config, sink: &mut dyn Sink) -> Result<(), InspectError> {
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
    match decoded {
        // Stopped before tcpdump wrote anything: nothing was captured.
        Err(InspectError::TruncatedHeader { got: 0 }) => {
            sink.summary(&midge_inspect::Summary::default())?;
        }
        other => {
            other?;
        }
    }
    if end.dropped > 0 {
        sink.warning(&format!(
            "tcpdump: {} packets dropped by the kernel: the capture misses them",
            end.dropped
        ))?;
    }
    io::stdout().flush()?;
    Ok(())
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
