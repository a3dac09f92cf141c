//! `GET /metrics` over plain HTTP/1.1 for the NOC's Prometheus. Deliberately tiny: one request per
//! connection, request head capped at 8 KiB, anything but `GET /metrics` answered 404.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read before the connection is answered 431 and closed.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A scraper that sends nothing for this long is disconnected.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the metrics listener (so bind errors surface at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..read).unwrap_or_default());
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
        let body = metrics.encode();
        respond(
            &mut stream,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &body,
        )
        .await
    } else {
        respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served here\n",
        )
        .await
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
