//! `midge cert`: a certificate authority for a broker and its devices, in a few commands.
//!
//! ```text
//! midge cert init                       DIR/ca.crt, DIR/ca.key (0600), DIR/crl.pem
//! midge cert server --host NAME --ip A  DIR/servers/NAME.crt and .key (as root: the key
//!                                       belongs to the broker's user, mosquitto)
//! midge cert client NAME                DIR/clients/NAME.crt and .key, CN=NAME
//! midge cert revoke NAME                NAME's serial into DIR/crl.pem
//! midge cert list                       every certificate, its expiry, revoked or not
//! ```
//! PEM throughout, so mosquitto and its clients read the same files.
//!
//! Started as root, the broker reads its files as root, then runs as its `user` (mosquitto)
//! and reads the certificate, key, CA and CRL again on SIGHUP as that user: so, run as root,
//! `midge cert` gives the server's key to that user (mode 0600, as mosquitto's own
//! Let's Encrypt hook does: `chown mosquitto`), writes certificates and the CRL 0644 and its
//! directories 0755 whatever the umask, and says when that user still cannot reach them.
mod authority;

use std::path::PathBuf;
use std::process::ExitCode;

use authority::{Authority, CertError, KeyType, Kind};

/// Run a certificate authority for brokers and devices.
#[derive(clap::Args, Debug)]
pub struct CertArgs {
    /// The directory of the CA and its certificates.
    #[arg(long, global = true, default_value = "pki")]
    dir: PathBuf,
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CertCommand {
    /// Create the certificate authority: ca.crt, ca.key (mode 0600) and an empty CRL.
    Init {
        /// The CA's Common Name.
        #[arg(long, default_value = "midge CA")]
        cn: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Key type: ecdsa-p256 or ed25519.
        #[arg(long = "key-type", default_value = "ecdsa-p256")]
        key_type: String,
        /// Replace an existing CA (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a server certificate with these names (subject alternative names).
    Server {
        /// DNS name of the broker; may be repeated. The first names the files.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// IP address of the broker; may be repeated.
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Key type: ecdsa-p256 or ed25519.
        #[arg(long = "key-type", default_value = "ecdsa-p256")]
        key_type: String,
        /// Replace existing files of that name.
        #[arg(long)]
        force: bool,
        /// The user the broker runs as (its `user` option). Run as root, midge cert gives the
        /// key to this user, so that the broker can read it again on SIGHUP after it has
        /// dropped root; `root` keeps it root's.
        #[arg(long, value_name = "NAME", default_value = midge_broker::config::DEFAULT_USER)]
        user: String,
    },
    /// Issue a client certificate with CN=NAME (the user name with use_identity_as_username).
    Client {
        /// The client's name.
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Key type: ecdsa-p256 or ed25519.
        #[arg(long = "key-type", default_value = "ecdsa-p256")]
        key_type: String,
        /// Replace existing files of that name.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate: its serial goes into crl.pem.
    Revoke {
        /// The client's name (or the server's, with --server).
        name: String,
        /// Revoke a server certificate instead of a client one.
        #[arg(long)]
        server: bool,
    },
    /// Issue the CRL again (it is valid for a year; brokers refuse an expired one).
    Crl,
    /// List every certificate, its expiry, and whether it is revoked.
    List,
}

/// Who gets the server's key.
enum KeyOwner {
    /// Not run as root: the files are the user's who runs midge cert (and the broker).
    Invoker,
    /// Run as root with `--user root`: the broker keeps root.
    Root,
    /// Run as root, for a broker that will run as this user.
    User(nix::unistd::User),
    /// Run as root, but the broker's default user does not exist.
    Missing(String),
}

impl KeyOwner {
    fn account(&self) -> Option<&nix::unistd::User> {
        match self {
            KeyOwner::User(u) => Some(u),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            KeyOwner::Invoker | KeyOwner::Root => "mode 0600".into(),
            KeyOwner::User(u) => {
                format!("mode 0600, owned by user {}, which the broker runs as: it reads the key again on SIGHUP", u.name)
            }
            KeyOwner::Missing(name) => format!(
                "mode 0600, root's: there is no user {name}; chown it to the user the broker runs as, or it cannot \
                 read it again on SIGHUP"
            ),
        }
    }
}

/// The owner of a server key for a broker that runs as `user` (see [`KeyOwner`]).
fn key_owner(user: &str) -> Result<KeyOwner, CertError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(KeyOwner::Invoker);
    }
    if user == "root" {
        return Ok(KeyOwner::Root);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(KeyOwner::User(u)),
        // The broker falls back to nobody then, which should own no keys.
        _ if user == midge_broker::config::DEFAULT_USER => Ok(KeyOwner::Missing(user.to_owned())),
        _ => Err(CertError::Usage(format!("no user '{user}' (--user): give the user the broker runs as"))),
    }
}

/// Says which of `files` the broker's user cannot read (a directory above them not
/// searchable by it, typically a home directory): the broker could not reload them.
fn warn_unreadable(user: &nix::unistd::User, files: &[PathBuf]) {
    for f in files.iter().filter(|f| !midge_broker::config::can_read(user, f)) {
        println!(
            "Warning: user {} cannot read {} (it or a directory above it is closed to that user): a broker \
             running as {} cannot read it again on SIGHUP; keep the files where it can, such as \
             /etc/mosquitto/certs",
            user.name,
            f.display(),
            user.name
        );
    }
}

fn key_type(s: &str) -> Result<KeyType, CertError> {
    match s {
        "ecdsa-p256" | "ecdsa" | "p256" => Ok(KeyType::EcdsaP256),
        "ed25519" => Ok(KeyType::Ed25519),
        other => Err(CertError::Usage(format!("unknown key type '{other}': use ecdsa-p256 or ed25519"))),
    }
}

pub fn run(args: CertArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(args: CertArgs) -> Result<(), CertError> {
    let dir = args.dir;
    match args.command {
        CertCommand::Init { cn, days, key_type: kt, force } => {
            let ca = Authority::init(&dir, &cn, days, key_type(&kt)?, force)?;
            println!("Created the CA \"{cn}\" in {}:", dir.display());
            println!("  {}  (give this to brokers and clients: cafile)", ca.cert_path().display());
            println!("  {}  (keep secret: mode 0600)", ca.key_path().display());
            println!("  {}  (revoked certificates: crlfile)", ca.crl_path().display());
        }
        CertCommand::Server { hosts, ips, days, key_type: kt, force, user } => {
            if hosts.is_empty() && ips.is_empty() {
                return Err(CertError::Usage(
                    "give the broker's names: --host NAME and / or --ip ADDRESS".into(),
                ));
            }
            let owner = key_owner(&user)?;
            let ca = Authority::open(&dir)?;
            let issued = ca.issue_server(&hosts, &ips, days, key_type(&kt)?, force, owner.account())?;
            println!("Issued a server certificate for {}:", issued.names.join(", "));
            println!("  {}", issued.cert.display());
            println!("  {}  ({})", issued.key.display(), owner.describe());
            if let KeyOwner::User(u) = &owner {
                let files = [issued.cert.clone(), issued.key.clone(), ca.cert_path(), ca.crl_path()];
                warn_unreadable(u, &files);
            }
        }
        CertCommand::Client { name, days, key_type: kt, force } => {
            let ca = Authority::open(&dir)?;
            let issued = ca.issue_client(&name, days, key_type(&kt)?, force)?;
            println!("Issued a client certificate for CN={name}:");
            println!("  {}", issued.cert.display());
            println!("  {}  (mode 0600)", issued.key.display());
        }
        CertCommand::Revoke { name, server } => {
            let ca = Authority::open(&dir)?;
            let kind = if server { Kind::Server } else { Kind::Client };
            let serial = ca.revoke(kind, &name)?;
            let crl = ca.crl_path();
            println!(
                "Revoked {} certificate {name} (serial {serial}); {} updated.",
                kind.name(),
                crl.display()
            );
            println!(
                "Until a broker reads the new CRL, it still lets this certificate in. midge applies it on \
                 SIGHUP (kill -HUP <broker's pid>): it refuses the certificate from then on and disconnects \
                 the clients connected with it. A broker that reads its crlfile only when it starts must be \
                 restarted."
            );
            if let KeyOwner::User(u) = key_owner(midge_broker::config::DEFAULT_USER)? {
                warn_unreadable(&u, &[crl]);
            }
        }
        CertCommand::Crl => {
            let ca = Authority::open(&dir)?;
            ca.write_crl(None)?;
            println!("Issued {} again.", ca.crl_path().display());
        }
        CertCommand::List => {
            let ca = Authority::open(&dir)?;
            print!("{}", ca.list_table()?);
        }
    }
    Ok(())
}
