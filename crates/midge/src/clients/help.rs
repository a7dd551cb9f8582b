//! `--help` of the client tools: mosquitto's layout (it exits 1, as theirs does), midge's
//! options.

const COMMON: &str = "\
 -A : bind the outgoing socket to this address.
 -c : persistent session: no clean session; with -V 5 the session does not expire (see -x).
 -d : print every packet sent and received.
 -D : MQTT 5.0 property: -D COMMAND IDENTIFIER VALUE (COMMAND: connect, publish, subscribe,
      unsubscribe, disconnect, will).
 -h : host to connect to (default localhost).
 -i : client id (default: assigned by the broker; random for MQTT 3.1).
 -I : client id prefix, followed by the process id.
 -k : keep alive in seconds, 5 to 65535 (default 60).
 -L : mqtt(s)://[username[:password]@]host[:port]/topic
 -p : port (default 1883, or 8883 with TLS).
 -P : password.
 -q : quality of service, 0, 1 or 2 (default 0).
 -u : user name.
 -V : protocol version: mqttv5, mqttv311 or mqttv31 (5, 311, 31).
 -x : session expiry interval (5.0), seconds; -1 for never.
 --help : this message.
 --nodelay : accepted; midge always disables Nagle's algorithm.
 --quiet : print no error messages.
 --will-topic, --will-payload, --will-qos, --will-retain : the will.
 --cafile, --capath : trusted CA certificates (enable TLS).
 --cert, --key : client certificate and key.
 --insecure : do not check that the certificate names the host.
 --tls-version : tlsv1.3 or tlsv1.2.
 --tls-alpn : ALPN protocol to offer.
";

const OUTPUT: &str = "\
 -F : output format (%t topic, %p payload, %x / %X hex, %j / %J JSON, %q QoS, %r retain,
      %l length, %m message id, %I / %U time, 5.0: %A %C %D %E %F %P %R %S; @ time fields).
 -N : no end of line after each message.
 -v : print \"topic payload\".
 --pretty : indented JSON for %j and %J.
";

fn version_line(name: &str) -> String {
    format!("{name} (midge version {})", env!("CARGO_PKG_VERSION"))
}

pub fn pub_help(name: &str) -> String {
    format!(
        "{name} is a simple mqtt client that will publish a message on a single topic and exit.\n{}\n\n\
         Usage: {name} {{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL}}\n\
         {pad}{{-f file | -l | -n | -m message | -s}}\n\
         {pad}[-c] [-k keepalive] [-q qos] [-r] [--repeat N] [--repeat-delay time] [-x session-expiry]\n\
         {pad}[-A bind_address] [-i id] [-I id_prefix] [-d] [--quiet] [-M max_inflight]\n\
         {pad}[--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]\n\
         {pad}[{{--cafile file | --capath dir}} [--cert file] [--key file] [--insecure] [--tls-version v]]\n\
         {pad}[-D command identifier value]\n\
         {pad2}{name} --help\n\n\
         {COMMON} -f : send the contents of a file.\n -l : send each line of standard input as a message.\n\
          -m : the message.\n -M : QoS 1 / 2 messages in flight at once.\n -n : send a zero-length message.\n\
          -r : retain the message.\n -s : send all of standard input as one message.\n -t : topic to publish to.\n\
          --repeat : publish N times (with -f, -m, -n or -s).\n --repeat-delay : seconds between repeats.\n",
        version_line(name),
        pad = " ".repeat(8 + name.len()),
        pad2 = " ".repeat(7),
    )
}

pub fn sub_help(name: &str) -> String {
    format!(
        "{name} is a simple mqtt client that will subscribe to a set of topics and print all messages it receives.\n{}\n\n\
         Usage: {name} {{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL [-t topic]}}\n\
         {pad}[-c] [-k keepalive] [-q qos] [-x session-expiry-interval]\n\
         {pad}[-C msg_count] [-E] [-R] [--retained-only] [--remove-retained] [-T filter_out] [-U topic ...]\n\
         {pad}[-F format] [-W timeout_secs] [-A bind_address] [-i id] [-I id_prefix]\n\
         {pad}[-d] [-N] [--quiet] [-v] [--pretty] [--random-filter chance] [--retain-as-published]\n\
         {pad}[--will-topic [--will-payload payload] [--will-qos qos] [--will-retain]]\n\
         {pad}[{{--cafile file | --capath dir}} [--cert file] [--key file] [--insecure] [--tls-version v]]\n\
         {pad}[-D command identifier value]\n\
         {pad2}{name} --help\n\n\
         {COMMON}{OUTPUT} -C : exit after this many messages.\n -E : exit once the subscriptions are acknowledged.\n\
          -R : do not print stale (retained) messages.\n -t : topic filter to subscribe to; may be repeated.\n\
          -T : topic filter whose messages are not printed; may be repeated.\n\
          -U : unsubscribe from this filter; may be repeated.\n -W : exit after this many seconds.\n\
          --random-filter : print only this percentage of messages (0.1 to 100).\n\
          --remove-retained : clear the retained messages received (-T protects some).\n\
          --retain-as-published : keep the retain flag of forwarded messages (5.0).\n\
          --retained-only : print retained messages only; exit at the first fresh one.\n",
        version_line(name),
        pad = " ".repeat(8 + name.len()),
        pad2 = " ".repeat(7),
    )
}

pub fn rr_help(name: &str) -> String {
    format!(
        "{name} is an mqtt client that can be used to publish a request message and wait for a response.\n\
         {pad3}MQTT 5.0 by default, where the Response Topic property is used; 3.1.1 also works.\n{}\n\n\
         Usage: {name} {{[-h host] [-p port] [-u username] [-P password] -t topic | -L URL}} -e response-topic\n\
         {pad}{{-f file | -n | -m message | -s}}\n\
         {pad}[-c] [-k keepalive] [-q qos] [-R] [-x session-expiry-interval] [-F format] [-W timeout_secs]\n\
         {pad}[-A bind_address] [-i id] [-I id_prefix] [-d] [-N] [--quiet] [-v]\n\
         {pad}[{{--cafile file | --capath dir}} [--cert file] [--key file] [--insecure] [--tls-version v]]\n\
         {pad}[-D command identifier value]\n\
         {pad2}{name} --help\n\n\
         {COMMON}{OUTPUT} -e : topic the response comes on.\n -m, -f, -n, -s : the request, as for mosquitto_pub.\n\
          -R : do not print stale (retained) responses.\n -t : topic to send the request to.\n\
          -W : give up after this many seconds.\n",
        version_line(name),
        pad = " ".repeat(8 + name.len()),
        pad2 = " ".repeat(7),
        pad3 = " ".repeat(name.len() + 1),
    )
}
