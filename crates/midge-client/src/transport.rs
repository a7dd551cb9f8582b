//! The byte stream MQTT runs on: plain TCP, or whatever a [`Connector`] makes of it (TLS).
use std::future::Future;
use std::pin::Pin;

pub use midge_net::{BoxStream, Stream};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::{Error, Kind};
use crate::Options;

/// Wraps a connected TCP stream, for example in TLS.
pub trait Connector: Send + Sync {
    /// Turns the TCP stream to `host` into the stream MQTT runs on.
    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, Error>> + Send>>;
}

/// Opens the TCP connection (binding the local address first when asked, `TCP_NODELAY` on)
/// and applies the connector, without speaking MQTT: [`crate::connect`] sends CONNECT on it;
/// `midge bench --flat-out` drives the stream itself.
pub async fn open(opts: &Options) -> Result<BoxStream, Error> {
    let addrs = tokio::net::lookup_host((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| Error::new(Kind::Lookup(e)))?;
    let mut last = None;
    for addr in addrs {
        let attempt = async {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            if let Some(ip) = opts.bind_address {
                socket.bind((ip, 0).into())?;
            }
            socket.connect(addr).await
        };
        match attempt.await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return match &opts.connector {
                    Some(c) => c.connect(&opts.host, tcp).await,
                    None => Ok(Box::new(tcp)),
                };
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => Error::new(Kind::Lookup(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name does not resolve",
        ))),
    })
}
