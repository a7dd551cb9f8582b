//! `midge cert`: a certificate authority for a broker and its devices, in a few commands.
//!
//! ```text
//! midge cert init                       DIR/ca.crt, DIR/ca.key (0600), DIR/crl.pem
//! midge cert server --host NAME --ip A  DIR/servers/NAME.crt and .key
//! midge cert client NAME                DIR/clients/NAME.crt and .key, CN=NAME
//! midge cert revoke NAME                NAME's serial into DIR/crl.pem
//! midge cert list                       every certificate, its expiry, revoked or not
//! ```
//! PEM throughout, so mosquitto and its clients read the same files.
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
        CertCommand::Server { hosts, ips, days, key_type: kt, force } => {
            if hosts.is_empty() && ips.is_empty() {
                return Err(CertError::Usage(
                    "give the broker's names: --host NAME and / or --ip ADDRESS".into(),
                ));
            }
            let ca = Authority::open(&dir)?;
            let issued = ca.issue_server(&hosts, &ips, days, key_type(&kt)?, force)?;
            println!("Issued a server certificate for {}:", issued.names.join(", "));
            println!("  {}", issued.cert.display());
            println!("  {}  (mode 0600)", issued.key.display());
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
            println!(
                "Revoked {} certificate {name} (serial {serial}); {} updated.",
                kind.name(),
                ca.crl_path().display()
            );
            println!("Brokers read the new CRL on SIGHUP (kill -HUP <pid>).");
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
