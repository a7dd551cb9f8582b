//! `http_dir` on a WebSockets listener: plain HTTP requests (those that ask for no WebSocket
//! upgrade) get the files of that directory, as mosquitto serves them, so that a web page
//! and its MQTT connection come from one port. GET and HEAD only; the path never leaves the
//! directory (no `..`, symbolic links followed only to files inside it); a directory is its
//! `index.html`. The connection closes after the answer.
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest an answer may take (a large file to a slow client), after which the
/// connection is closed.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The request line and whether the client asked for a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// GET, HEAD, ...
    pub method: String,
    /// The path, as sent (with its query).
    pub target: String,
    /// It has `Upgrade: websocket`.
    pub upgrade: bool,
}

impl Head {
    /// Parses a complete request head (up to its empty line); `None` when it is not HTTP.
    pub fn parse(bytes: &[u8]) -> Option<Head> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let upgrade = request.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("upgrade")
                && std::str::from_utf8(h.value).is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        });
        Some(Head { method: request.method?.to_owned(), target: request.path?.to_owned(), upgrade })
    }
}

/// What a request's path leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A file inside the directory.
    File(PathBuf),
    /// A directory named without its final slash: the client is sent there with one, so
    /// that the links of its `index.html` resolve inside it.
    Slash(String),
}

/// The file of `dir` that `target` names, if it is one inside `dir`.
pub fn resolve(dir: &Path, target: &str) -> Option<Found> {
    let path = target.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    let mut file = dir.to_path_buf();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains(['\\', '\0']) => return None,
            p => file.push(p),
        }
    }
    if file.is_dir() {
        if !path.ends_with('/') {
            // One leading slash: `//host` would be read as another host (an open redirect).
            return Some(Found::Slash(format!("/{}/", path.trim_start_matches('/'))));
        }
        file.push("index.html");
    }
    // Symbolic links may point anywhere: what they lead to must still be inside.
    let real = file.canonicalize().ok()?;
    (real.starts_with(dir.canonicalize().ok()?) && real.is_file()).then_some(Found::File(real))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js" | "mjs") => "text/javascript",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Answers `head` from `dir`; returns the status sent.
pub async fn answer<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, head: &Head, dir: &Path) -> u16 {
    let found = match head.method.as_str() {
        "GET" | "HEAD" => resolve(dir, &head.target),
        _ => {
            let _ = reply(stream, 405, "Method Not Allowed", "text/plain", Some(b"GET or HEAD only\n")).await;
            return 405;
        }
    };
    let path = match found {
        Some(Found::File(path)) => path,
        Some(Found::Slash(to)) => {
            let head = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
            return 301;
        }
        None => {
            let _ = reply(stream, 404, "Not Found", "text/plain", Some(b"not found\n")).await;
            return 404;
        }
    };
    let Ok(file) = tokio::fs::File::open(&path).await else {
        let _ = reply(stream, 404, "Not Found", "text/plain", Some(b"not found\n")).await;
        return 404;
    };
    let len = file.metadata().await.map_or(0, |m| m.len());
    let head_line = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        content_type(&path)
    );
    if stream.write_all(head_line.as_bytes()).await.is_ok() && head.method == "GET" {
        // What Content-Length said, even if the file grows meanwhile.
        let _ = tokio::io::copy(&mut file.take(len), stream).await;
    }
    let _ = stream.shutdown().await;
    200
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: u16,
    reason: &str,
    kind: &str,
    body: Option<&[u8]>,
) -> std::io::Result<()> {
    let body = body.unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let dir = std::env::temp_dir().join(format!("midge-http-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("sub/a b.js"), "x").unwrap();
        let inside = |t: &str| match resolve(&dir, t) {
            Some(Found::File(p)) => Some(p.file_name().unwrap().to_string_lossy().into_owned()),
            Some(Found::Slash(to)) => Some(format!("-> {to}")),
            None => None,
        };
        assert_eq!(inside("/").as_deref(), Some("index.html"));
        assert_eq!(inside("/sub").as_deref(), Some("-> /sub/"), "a directory is named with its slash");
        assert_eq!(inside("//sub").as_deref(), Some("-> /sub/"), "never to //host: another host");
        assert_eq!(inside("/index.html?x=1").as_deref(), Some("index.html"));
        assert_eq!(inside("/sub/a%20b.js").as_deref(), Some("a b.js"));
        assert_eq!(inside("/sub/"), None, "a directory without index.html");
        for escape in ["/../etc/passwd", "/sub/../../x", "/%2e%2e/x", "/nothing", "/%zz", "/a\\b"] {
            assert_eq!(inside(escape), None, "{escape}");
        }
        std::os::unix::fs::symlink("/etc/hostname", dir.join("out")).unwrap();
        assert_eq!(inside("/out"), None, "a link leading outside");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_request_says_whether_it_asks_for_a_websocket() {
        let ws = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(Head::parse(ws).unwrap().upgrade);
        let page = Head::parse(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((page.method.as_str(), page.target.as_str(), page.upgrade), ("GET", "/index.html", false));
        assert_eq!(Head::parse(b"\x10\x0c\x00\x04MQTT"), None);
    }
}
