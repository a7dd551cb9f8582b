//! The certificate authority on disk: create it, issue server and client certificates,
//! revoke them, list them. The files are the only state: `list` and `revoke` read the
//! certificates and the CRL back.
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

/// The key algorithm of a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: read by every TLS stack).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The authority itself.
    Ca,
    /// A broker.
    Server,
    /// A device or user.
    Client,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ca => "ca",
            Kind::Server => "server",
            Kind::Client => "client",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Ca => "",
            Kind::Server => "servers",
            Kind::Client => "clients",
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A file operation.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The files would be overwritten.
    #[error("{0} already exists (use --force to replace it)")]
    Exists(PathBuf),
    /// No such certificate.
    #[error("{0}")]
    NotFound(String),
    /// A file does not hold what it should.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Certificate generation.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_owned(), source }
}

/// How a certificate is issued: its validity in days, its key type, whether it replaces
/// files of its name, and who owns its key (`None`: whoever runs midge cert).
struct Terms<'a> {
    days: u32,
    kt: KeyType,
    force: bool,
    key_owner: Option<&'a nix::unistd::User>,
}

/// A certificate just issued.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub names: Vec<String>,
}

/// The CA, loaded from its directory.
pub struct Authority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn new_key(kt: KeyType) -> Result<KeyPair, CertError> {
    Ok(match kt {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
    })
}

/// The private key in PEM. Ed25519 keys are written as PKCS#8 version 1 (RFC 8410: the
/// private key only), which OpenSSL 3.0 (mosquitto, openssl pkey) reads; ring makes version
/// 2 (with the public key), which it does not.
fn key_pem(key: &KeyPair) -> String {
    if key.algorithm() == &rcgen::PKCS_ED25519 {
        match ed25519_pkcs8_v1(&key.serialize_der()) {
            Some(v1) => return pem("PRIVATE KEY", &v1),
            None => {
                eprintln!("Warning: this Ed25519 key is written as PKCS#8 v2, which OpenSSL 3.0 cannot read.")
            }
        }
    }
    key.serialize_pem()
}

/// The DER prefix of an Ed25519 PKCS#8 v1 key (RFC 8410 section 7): SEQUENCE, version 0,
/// algorithm id-Ed25519 (1.3.101.112), OCTET STRING holding the 32-byte private key.
const ED25519_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// An Ed25519 PKCS#8 key (version 1 or 2) as version 1.
fn ed25519_pkcs8_v1(der: &[u8]) -> Option<Vec<u8>> {
    // Both versions carry the algorithm and then the private key as in the v1 prefix.
    let algorithm_and_key = &ED25519_V1_PREFIX[5..];
    let at =
        der.windows(algorithm_and_key.len()).position(|w| w == algorithm_and_key)? + algorithm_and_key.len();
    let seed = der.get(at..at + 32)?;
    Some([&ED25519_V1_PREFIX[..], seed].concat())
}

/// PEM text: the base64 of `der` in lines of 64, between BEGIN and END lines.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A random positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).expect("system random number generator");
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
}

/// Creates `dir` and the directories above it that are missing, with mode 0755 whatever the
/// umask: certificates and the CRL below must stay reachable by the broker's user once it has
/// dropped root (the keys are protected by their own mode).
fn create_dirs(dir: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io(dir))?;
    for d in missing {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(io(d))?;
    }
    Ok(())
}

/// Writes a file atomically (a temporary file renamed over it). Keys get mode 0600 from
/// creation on, so they are never readable by others, and `owner` when given (the broker's
/// user, when run as root: the broker reads the key again on SIGHUP after dropping root);
/// certificates and CRLs get 0644. The modes are set explicitly, whatever the umask.
fn write(path: &Path, text: &str, secret: bool, owner: Option<&nix::unistd::User>) -> Result<(), CertError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    let mode = if secret { 0o600 } else { 0o644 };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    if let Some(u) = owner {
        std::os::unix::fs::fchown(&f, Some(u.uid.as_raw()), Some(u.gid.as_raw())).map_err(io(&tmp))?;
    }
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn check_name(name: &str) -> Result<(), CertError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(CertError::Usage(format!(
            "invalid name '{name}': it names files, so no '/' or control characters"
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A revoked serial number and when it was revoked (unix time).
type Revoked = (Vec<u8>, i64);

struct CertInfo {
    kind: Kind,
    name: String,
    serial: Vec<u8>,
    not_after: i64,
}

impl Authority {
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// Creates the CA and an empty CRL.
    pub fn init(dir: &Path, cn: &str, days: u32, kt: KeyType, force: bool) -> Result<Authority, CertError> {
        let key_path = dir.join("ca.key");
        if key_path.exists() && !force {
            return Err(CertError::Exists(key_path));
        }
        let key = new_key(kt)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        write(&key_path, &key_pem(&key), true, None)?;
        write(&dir.join("ca.crt"), &cert.pem(), false, None)?;
        let ca = Authority { dir: dir.to_owned(), issuer: Issuer::new(params, key) };
        ca.write_crl(None)?;
        Ok(ca)
    }

    /// Loads the CA from its directory.
    pub fn open(dir: &Path) -> Result<Authority, CertError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !key_path.exists() {
            return Err(CertError::NotFound(format!(
                "no CA in {}: create one with `midge cert init --dir {}`",
                dir.display(),
                dir.display()
            )));
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CertError::Parse { path: key_path, message: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| CertError::Parse { path: cert_path, message: e.to_string() })?;
        Ok(Authority { dir: dir.to_owned(), issuer })
    }

    fn issue(
        &self,
        kind: Kind,
        file_name: &str,
        mut params: CertificateParams,
        terms: Terms<'_>,
    ) -> Result<(PathBuf, PathBuf), CertError> {
        let Terms { days, kt, force, key_owner } = terms;
        check_name(file_name)?;
        let base = self.dir.join(kind.dir());
        let cert_path = base.join(format!("{file_name}.crt"));
        let key_path = base.join(format!("{file_name}.key"));
        if cert_path.exists() && !force {
            return Err(CertError::Exists(cert_path));
        }
        let key = new_key(kt)?;
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        write(&key_path, &key_pem(&key), true, key_owner)?;
        write(&cert_path, &cert.pem(), false, None)?;
        Ok((cert_path, key_path))
    }

    /// A server certificate for these DNS names and addresses; its key belongs to
    /// `key_owner` when given (the broker's user).
    pub fn issue_server(
        &self,
        hosts: &[String],
        ips: &[IpAddr],
        days: u32,
        kt: KeyType,
        force: bool,
        key_owner: Option<&nix::unistd::User>,
    ) -> Result<Issued, CertError> {
        let mut names: Vec<String> = hosts.to_vec();
        names.extend(ips.iter().map(IpAddr::to_string));
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        for h in hosts {
            let dns =
                h.clone().try_into().map_err(|_| CertError::Usage(format!("invalid host name '{h}'")))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) =
            self.issue(Kind::Server, &names[0], params, Terms { days, kt, force, key_owner })?;
        Ok(Issued { cert, key, names })
    }

    /// A client certificate with CN=NAME.
    pub fn issue_client(&self, name: &str, days: u32, kt: KeyType, force: bool) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) =
            self.issue(Kind::Client, name, params, Terms { days, kt, force, key_owner: None })?;
        Ok(Issued { cert, key, names: vec![name.to_owned()] })
    }

    /// The serials already revoked, with when (unix time), and the CRL's number.
    fn read_crl(&self) -> Result<(Vec<Revoked>, Vec<u8>), CertError> {
        let path = self.crl_path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), vec![0])),
            Err(e) => return Err(io(&path)(e)),
        };
        let bad = |m: String| CertError::Parse { path: path.clone(), message: m };
        let (_, pem) = x509_parser::pem::parse_x509_pem(&data).map_err(|e| bad(e.to_string()))?;
        let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).map_err(|e| bad(e.to_string()))?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| (r.raw_serial().to_vec(), r.revocation_date.timestamp()))
            .collect();
        let number = crl.crl_number().map(|n| n.to_bytes_be()).unwrap_or_else(|| vec![0]);
        Ok((revoked, number))
    }

    /// Writes crl.pem again: the revoked serials it had, plus `extra`, under the next number.
    pub fn write_crl(&self, extra: Option<RevokedCertParams>) -> Result<(), CertError> {
        let (revoked, number) = self.read_crl()?;
        let mut n = u128::from_be_bytes({
            let mut b = [0u8; 16];
            let take = number.len().min(16);
            b[16 - take..].copy_from_slice(&number[number.len() - take..]);
            b
        });
        n += 1;
        let mut revoked_certs: Vec<RevokedCertParams> = revoked
            .into_iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(at)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        revoked_certs.extend(extra);
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from_slice(&n.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        write(&self.crl_path(), &crl.pem()?, false, None)
    }

    fn read_cert(path: &Path, kind: Kind) -> Result<CertInfo, CertError> {
        let data = std::fs::read(path).map_err(io(path))?;
        let bad = |m: String| CertError::Parse { path: path.to_owned(), message: m };
        let (_, pem) = x509_parser::pem::parse_x509_pem(&data).map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .unwrap_or_default();
        Ok(CertInfo {
            kind,
            name,
            serial: cert.raw_serial().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Revokes a certificate by name; returns its serial in hex.
    pub fn revoke(&self, kind: Kind, name: &str) -> Result<String, CertError> {
        check_name(name)?;
        let path = self.dir.join(kind.dir()).join(format!("{name}.crt"));
        if !path.exists() {
            return Err(CertError::NotFound(format!(
                "no {} certificate named '{name}' ({})",
                kind.name(),
                path.display()
            )));
        }
        let info = Authority::read_cert(&path, kind)?;
        let (revoked, _) = self.read_crl()?;
        if revoked.iter().any(|(s, _)| *s == info.serial) {
            return Err(CertError::Usage(format!("{} certificate '{name}' is already revoked", kind.name())));
        }
        self.write_crl(Some(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&info.serial),
            revocation_time: OffsetDateTime::now_utc(),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        }))?;
        Ok(hex(&info.serial))
    }

    /// Every certificate with its expiry and status, as a table.
    pub fn list_table(&self) -> Result<String, CertError> {
        let mut certs = vec![Authority::read_cert(&self.cert_path(), Kind::Ca)?];
        for kind in [Kind::Server, Kind::Client] {
            let dir = self.dir.join(kind.dir());
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            paths.sort();
            for p in paths {
                certs.push(Authority::read_cert(&p, kind)?);
            }
        }
        let (revoked, _) = self.read_crl()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut out =
            format!("{:<7} {:<24} {:<33} {:<12} {}\n", "KIND", "NAME", "SERIAL", "EXPIRES", "STATUS");
        for c in certs {
            let expires = OffsetDateTime::from_unix_timestamp(c.not_after)
                .map(|t| t.date().to_string())
                .unwrap_or_default();
            let days_left = (c.not_after - now) / 86_400;
            let status = if let Some((_, at)) = revoked.iter().find(|(s, _)| *s == c.serial) {
                let when = OffsetDateTime::from_unix_timestamp(*at)
                    .map(|t| t.date().to_string())
                    .unwrap_or_default();
                format!("revoked {when}")
            } else if c.not_after <= now {
                "EXPIRED".to_owned()
            } else if days_left < 30 {
                format!("valid, expires in {days_left} days")
            } else {
                "valid".to_owned()
            };
            out.push_str(&format!(
                "{:<7} {:<24} {:<33} {:<12} {}\n",
                c.kind.name(),
                c.name,
                hex(&c.serial),
                expires,
                status
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("midge-cert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn init_issue_revoke_list() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("flow");
        let ca = Authority::init(&dir, "test CA", 30, KeyType::EcdsaP256, false).unwrap();
        assert_eq!(std::fs::metadata(ca.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(
            Authority::init(&dir, "again", 30, KeyType::EcdsaP256, false),
            Err(CertError::Exists(_))
        ));
        let ca = Authority::open(&dir).unwrap();
        let s = ca
            .issue_server(
                &["localhost".into()],
                &["127.0.0.1".parse().unwrap()],
                10,
                KeyType::EcdsaP256,
                false,
                None,
            )
            .unwrap();
        assert_eq!(s.cert, dir.join("servers/localhost.crt"));
        let c = ca.issue_client("alice", 10, KeyType::Ed25519, false).unwrap();
        assert_eq!(std::fs::metadata(&c.key).unwrap().permissions().mode() & 0o777, 0o600);
        ca.issue_client("bob", 400, KeyType::EcdsaP256, false).unwrap();
        let serial = ca.revoke(Kind::Client, "alice").unwrap();
        assert!(ca.revoke(Kind::Client, "alice").is_err(), "twice");
        assert!(ca.revoke(Kind::Client, "nobody").is_err());
        let table = ca.list_table().unwrap();
        let line = |name: &str| {
            table.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap().to_owned()
        };
        assert!(line("alice").contains("revoked"), "{table}");
        assert!(line("alice").contains(&serial));
        assert!(line("bob").ends_with("valid"), "{table}");
        assert!(line("localhost").contains("expires in"), "{table}");
        // The CRL still lists alice after another revocation.
        ca.revoke(Kind::Client, "bob").unwrap();
        let (revoked, number) = ca.read_crl().unwrap();
        assert_eq!(revoked.len(), 2);
        assert_eq!(number.last(), Some(&3), "CRL numbers increase: init, alice, bob");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert!(check_name("../x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("ok-name_1").is_ok());
    }
}
