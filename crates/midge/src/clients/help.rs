//! `--help` of the client tools: mosquitto's layout (it exits 1, as theirs does), midge's
//! options.
//!
//! The options are listed as mosquitto's tools list them: one per line, each indented by a
//! space (" -q : ..."), a description that runs on aligned under its first line, the short
//! options in alphabetical order, then the long ones, TLS last.

/// An option of a listing: its flag and the lines of its description.
type Entry = (&'static str, &'static [&'static str]);

const COMMON_SHORT: &[Entry] = &[
    ("-A", &["bind the outgoing socket to this address."]),
    ("-c", &["persistent session: no clean session; with -V 5 the session does not expire (see -x)."]),
    ("-d", &["print every packet sent and received."]),
    (
        "-D",
        &[
            "MQTT 5.0 property: -D COMMAND IDENTIFIER VALUE (COMMAND: connect, publish, subscribe,",
            "unsubscribe, disconnect, will).",
        ],
    ),
    ("-h", &["host to connect to (default localhost)."]),
    ("-i", &["client id (default: assigned by the broker; random for MQTT 3.1)."]),
    ("-I", &["client id prefix, followed by the process id."]),
    ("-k", &["keep alive in seconds, 5 to 65535 (default 60)."]),
    ("-L", &["mqtt(s)://[username[:password]@]host[:port]/topic"]),
    ("-p", &["port (default 1883, or 8883 with TLS)."]),
    ("-P", &["password."]),
    ("-q", &["quality of service, 0, 1 or 2 (default 0)."]),
    ("-u", &["user name."]),
    ("-V", &["protocol version: mqttv5, mqttv311 or mqttv31 (5, 311, 31)."]),
    ("-x", &["session expiry interval (5.0), seconds; -1 for never."]),
];

/// What sub and rr print with.
const OUTPUT_SHORT: &[Entry] = &[
    (
        "-F",
        &[
            "output format (%t topic, %p payload, %x / %X hex, %j / %J JSON, %q QoS, %r retain,",
            "%l length, %m message id, %I / %U time, 5.0: %A %C %D %E %F %P %R %S; @ time fields).",
        ],
    ),
    ("-N", &["no end of line after each message."]),
    ("-v", &["print \"topic payload\"."]),
];

const HELP_LONG: &[Entry] =
    &[("--help", &["this message."]), ("--nodelay", &["accepted; midge always disables Nagle's algorithm."])];

const PRETTY_LONG: &[Entry] = &[("--pretty", &["indented JSON for %j and %J."])];

const QUIET_LONG: &[Entry] = &[("--quiet", &["print no error messages."])];

const WILL_LONG: &[Entry] = &[
    ("--will-payload", &["payload of the will (default: empty)."]),
    ("--will-qos", &["QoS of the will."]),
    ("--will-retain", &["retain the will."]),
    ("--will-topic", &["topic of the will, which the broker publishes if the connection is lost."]),
];

const TLS_LONG: &[Entry] = &[
    ("--cafile", &["file of trusted CA certificates (PEM); enables TLS."]),
    ("--capath", &["directory of trusted CA certificates (PEM); enables TLS."]),
    ("--tls-use-os-certs", &["trust the operating system's CA certificates; enables TLS."]),
    ("--cert", &["client certificate (PEM), for brokers that require one."]),
    ("--key", &["private key of the client certificate (PEM)."]),
    ("--ciphers", &["accepted and ignored: rustls chooses among its own secure cipher suites."]),
    ("--tls-version", &["tlsv1.3 or tlsv1.2 (default: either)."]),
    ("--tls-alpn", &["ALPN protocol to offer."]),
    ("--insecure", &["do not check that the certificate names the host."]),
];

const PUB_SHORT: &[Entry] = &[
    ("-f", &["send the contents of a file."]),
    ("-l", &["send each line of standard input as a message."]),
    ("-m", &["the message."]),
    ("-M", &["QoS 1 / 2 messages in flight at once."]),
    ("-n", &["send a zero-length message."]),
    ("-r", &["retain the message."]),
    ("-s", &["send all of standard input as one message."]),
    ("-t", &["topic to publish to."]),
];

const PUB_LONG: &[Entry] = &[
    ("--repeat", &["publish N times (with -f, -m, -n or -s)."]),
    ("--repeat-delay", &["seconds between repeats."]),
];

const SUB_SHORT: &[Entry] = &[
    ("-C", &["exit after this many messages."]),
    ("-E", &["exit once the subscriptions are acknowledged."]),
    ("-R", &["do not print stale (retained) messages."]),
    ("-t", &["topic filter to subscribe to; may be repeated."]),
    ("-T", &["topic filter whose messages are not printed; may be repeated."]),
    ("-U", &["unsubscribe from this filter; may be repeated."]),
    ("-W", &["exit after this many seconds."]),
];

const SUB_LONG: &[Entry] = &[
    ("--random-filter", &["print only this percentage of messages (0.1 to 100)."]),
    ("--remove-retained", &["clear the retained messages received (-T protects some)."]),
    ("--retain-as-published", &["keep the retain flag of forwarded messages (5.0)."]),
    ("--retained-only", &["print retained messages only; exit at the first fresh one."]),
];

const RR_SHORT: &[Entry] = &[
    ("-e", &["topic the response comes on."]),
    ("-f", &["send the contents of a file as the request."]),
    ("-m", &["the request."]),
    ("-n", &["send a zero-length request."]),
    ("-R", &["do not print stale (retained) responses."]),
    ("-s", &["send all of standard input as the request."]),
    ("-t", &["topic to send the request to."]),
    ("-W", &["give up after this many seconds."]),
];

/// The listing: short options sorted as mosquitto sorts them (by letter, lower case
/// first), then the long options in the order given.
fn options(short: &[&[Entry]], long: &[&[Entry]]) -> String {
    let mut shorts: Vec<Entry> = short.iter().flat_map(|s| s.iter().copied()).collect();
    shorts.sort_by_key(|(flag, _)| {
        let c = flag.chars().nth(1).unwrap_or(' ');
        (c.to_ascii_lowercase(), c.is_ascii_uppercase())
    });
    let mut out = String::new();
    for (flag, lines) in shorts.iter().chain(long.iter().flat_map(|l| l.iter())) {
        let head = format!(" {flag} : ");
        for (i, line) in lines.iter().enumerate() {
            let lead = if i == 0 { head.clone() } else { " ".repeat(head.len()) };
            out.push_str(&lead);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn version_line(name: &str) -> String {
    format!("{name} (midge version {})", env!("CARGO_PKG_VERSION"))
}

/// The usage block: `first` after "Usage: NAME ", the other lines aligned under it.
fn usage(name: &str, first: &str, rest: &[&str]) -> String {
    let pad = " ".repeat("Usage: ".len() + name.len() + 1);
    let mut out = format!("Usage: {name} {first}\n");
    for line in rest {
        out.push_str(&format!("{pad}{line}\n"));
    }
    out.push_str(&format!("{}{name} --help\n", " ".repeat("Usage: ".len())));
    out
}

const TLS_USAGE: &str =
    "[{--cafile file | --capath dir | --tls-use-os-certs} [--cert file] [--key file] [--insecure] [--tls-version v]]";
const WILL_USAGE: &str = "[--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]";

pub fn pub_help(name: &str) -> String {
    format!(
        "{name} is a simple mqtt client that will publish a message on a single topic and exit.\n{}\n\n{}\n{}",
        version_line(name),
        usage(
            name,
            "{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL}",
            &[
                "{-f file | -l | -n | -m message | -s}",
                "[-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]",
                "[-A bind_address] [--nodelay] [-i id] [-I id_prefix] [-d] [--quiet] [-M max_inflight]",
                WILL_USAGE,
                TLS_USAGE,
                "[-D command identifier value]",
            ],
        ),
        options(&[COMMON_SHORT, PUB_SHORT], &[HELP_LONG, QUIET_LONG, PUB_LONG, WILL_LONG, TLS_LONG]),
    )
}

pub fn sub_help(name: &str) -> String {
    format!(
        "{name} is a simple mqtt client that will subscribe to a set of topics and print all messages it receives.\n{}\n\n{}\n{}",
        version_line(name),
        usage(
            name,
            "{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}",
            &[
                "[-c] [-k keepalive] [-q qos] [-x session-expiry-interval]",
                "[-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]",
                "[-F format] [-W timeout_secs] [-A bind_address] [--nodelay] [-i id] [-I id_prefix]",
                "[-d] [-N] [--quiet] [-v] [--pretty] [--random-filter chance] [--retain-as-published]",
                WILL_USAGE,
                TLS_USAGE,
                "[-D command identifier value]",
            ],
        ),
        options(
            &[COMMON_SHORT, OUTPUT_SHORT, SUB_SHORT],
            &[HELP_LONG, PRETTY_LONG, QUIET_LONG, SUB_LONG, WILL_LONG, TLS_LONG]
        ),
    )
}

pub fn rr_help(name: &str) -> String {
    format!(
        "{name} is an mqtt client that can be used to publish a request message and wait for a response.\n\
         {}MQTT 5.0 by default, where the Response Topic property is used; 3.1.1 also works.\n{}\n\n{}\n{}",
        " ".repeat(name.len() + 1),
        version_line(name),
        usage(
            name,
            "{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL} -e response-topic",
            &[
                "{-f file | -n | -m message | -s}",
                "[-c] [-k keepalive] [-q qos] [-R] [-x session-expiry-interval] [-F format] [-W timeout_secs]",
                "[-A bind_address] [--nodelay] [-i id] [-I id_prefix] [-d] [-N] [--quiet] [-v] [--pretty]",
                WILL_USAGE,
                TLS_USAGE,
                "[-D command identifier value]",
            ],
        ),
        options(&[COMMON_SHORT, OUTPUT_SHORT, RR_SHORT], &[HELP_LONG, PRETTY_LONG, QUIET_LONG, WILL_LONG, TLS_LONG]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option line starts with a space and a dash; every other line of the listing is
    /// a continuation, aligned under the description above it.
    #[test]
    fn options_are_listed_in_mosquittos_layout() {
        for help in [pub_help("midge pub"), sub_help("midge sub"), rr_help("mosquitto_rr")] {
            let listing = help.split("--help\n\n").nth(1).expect("a blank line after the usage");
            let mut indent = None;
            for line in listing.lines() {
                if line.starts_with(" -") {
                    let colon = line.find(" : ").expect("FLAG : description");
                    indent = Some(colon + 3);
                } else {
                    let i = indent.expect("a continuation after an option");
                    assert!(line.len() > i && line[..i].trim().is_empty(), "misaligned: {line:?}");
                    assert!(!line[i..].starts_with(' '), "misaligned: {line:?}");
                }
            }
        }
    }

    #[test]
    fn short_options_sorted_lower_case_first() {
        let help = pub_help("midge pub");
        let flags: Vec<&str> = help
            .lines()
            .filter(|l| l.starts_with(" -") && !l.starts_with(" --"))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        let at = |f: &str| flags.iter().position(|x| *x == f).unwrap_or(usize::MAX);
        assert!(at("-A") < at("-c") && at("-c") < at("-d") && at("-d") < at("-D"));
        assert!(at("-m") < at("-M") && at("-M") < at("-n") && at("-x") == flags.len() - 1);
    }
}
