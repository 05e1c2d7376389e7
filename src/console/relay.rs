//! Relays one console: the browser's WebSocket on one side, the VM's VNC server on the other.
//!
//! Two directions run side by side, each through a fixed buffer: the VM's bytes are read
//! [`CHUNK`] at a time and each chunk is sent before the next is read, so a slow browser slows
//! the reading (TCP pushes back on the VNC server) instead of making vmdeck buffer; the
//! browser's messages are bounded by the WebSocket's [`ws_config`] and pass through the
//! [`ClientFilter`]. A watcher ends the console when its user's session ends or loses the role
//! its mode needs, or when nothing has passed either way for the idle time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rocket_ws::frame::{CloseCode, CloseFrame};
use rocket_ws::stream::DuplexStream;
use rocket_ws::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rfb::{ClientFilter, FilterError};
use super::Mode;
use crate::backend::DisplayIo;

/// The VM's bytes are read and sent this many at a time.
pub const CHUNK: usize = 64 * 1024;
/// How often the session, role and idle time are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The WebSocket's limits: a browser message of at most 2 MiB (noVNC's are a few bytes,
/// clipboard text aside), and at most 1 MiB queued towards a slow browser.
pub fn ws_config() -> rocket_ws::Config {
    rocket_ws::Config {
        max_message_size: Some(2 << 20),
        max_frame_size: Some(1 << 20),
        write_buffer_size: 0,
        max_write_buffer_size: 1 << 20,
        ..rocket_ws::Config::default()
    }
}

/// Why a console ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The user closed the page or the connection dropped.
    Browser,
    /// The VM's VNC server closed (the VM stopped, or the host went away).
    Vm,
    Idle(Duration),
    /// The session was logged out, expired or removed.
    SessionEnded,
    /// The user no longer has the role this console's mode needs.
    RoleChanged,
    Filter(FilterError),
    /// A read or write failed.
    Error(String),
}

impl End {
    pub fn words(&self) -> String {
        match self {
            End::Browser => "closed by the browser".into(),
            End::Vm => "the VM's display closed the connection (the VM stopped?)".into(),
            End::Idle(d) => format!("idle for {} s: nothing typed or shown", d.as_secs()),
            End::SessionEnded => "the session ended (logged out or expired)".into(),
            End::RoleChanged => "the user's role changed".into(),
            End::Filter(e) => e.to_string(),
            End::Error(e) => format!("connection error: {e}"),
        }
    }

    /// Whether the browser should be told why (it did not close the console itself).
    fn tell_browser(&self) -> bool {
        !matches!(self, End::Browser)
    }
}

/// What a console relayed, for the audit log.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: End,
    pub duration: Duration,
    pub to_browser: u64,
    pub to_vm: u64,
    /// Input messages a view-only console dropped.
    pub dropped: u64,
}

/// Asked every [`CHECK_EVERY`] whether the console may go on; `input` says whether the
/// browser sent anything since the last check (the session can then be kept alive).
#[rocket::async_trait]
pub trait Watch: Send + Sync {
    async fn check(&self, input: bool) -> Option<End>;
}

/// Relays until one side closes, the filter refuses, or the watcher or idle time ends it; then
/// tells the browser why (close code 4000 with the reason) and returns the summary.
pub async fn relay(
    ws: DuplexStream,
    display: Box<dyn DisplayIo>,
    mode: Mode,
    idle: Duration,
    watch: &dyn Watch,
) -> Summary {
    let started = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let (mut vm_read, mut vm_write) = tokio::io::split(display);
    let to_browser = AtomicU64::new(0);
    let to_vm = AtomicU64::new(0);
    let dropped = AtomicU64::new(0);
    // Milliseconds since `started` of the last byte either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);

    let end = {
        let up = async {
            let mut filter = ClientFilter::new(mode);
            let mut out = Vec::with_capacity(CHUNK);
            loop {
                let data = match stream.next().await {
                    None | Some(Ok(Message::Close(_))) => return End::Browser,
                    Some(Err(e)) => return End::Error(e.to_string()),
                    Some(Ok(Message::Binary(data))) => data,
                    // Pings are answered by the WebSocket itself; text has no place in RFB.
                    Some(Ok(_)) => continue,
                };
                touch();
                out.clear();
                if let Err(e) = filter.feed(&data, &mut out) {
                    return End::Filter(e);
                }
                dropped.store(filter.dropped(), Ordering::Relaxed);
                if out.is_empty() {
                    continue;
                }
                if let Err(e) = vm_write.write_all(&out).await {
                    return End::Error(format!("writing to the VM's display: {e}"));
                }
                to_vm.fetch_add(out.len() as u64, Ordering::Relaxed);
            }
        };
        let down = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match vm_read.read(&mut buf).await {
                    Ok(0) => return End::Vm,
                    Ok(n) => n,
                    Err(e) => return End::Error(format!("reading the VM's display: {e}")),
                };
                touch();
                if let Err(e) = sink.send(Message::Binary(buf[..n].to_vec())).await {
                    return match e {
                        rocket_ws::result::Error::ConnectionClosed => End::Browser,
                        e => End::Error(e.to_string()),
                    };
                }
                to_browser.fetch_add(n as u64, Ordering::Relaxed);
            }
        };
        let watcher = async {
            let mut sent_before = 0;
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let sent = to_vm.load(Ordering::Relaxed);
                if let Some(end) = watch.check(sent > sent_before).await {
                    return end;
                }
                sent_before = sent;
                let quiet = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if Duration::from_millis(quiet) >= idle {
                    return End::Idle(idle);
                }
            }
        };
        tokio::select! {
            end = up => end,
            end = down => end,
            end = watcher => end,
        }
    };
    if end.tell_browser() {
        let reason = close_reason(&end.words());
        let frame = CloseFrame { code: CloseCode::Library(4000), reason: reason.into() };
        let _ =
            tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame))))
                .await;
    }
    let _ = vm_write.shutdown().await;
    Summary {
        end,
        duration: started.elapsed(),
        to_browser: to_browser.into_inner(),
        to_vm: to_vm.into_inner(),
        dropped: dropped.into_inner(),
    }
}

/// A close frame's reason: at most 123 bytes of UTF-8, cut at a character boundary.
pub fn close_reason(words: &str) -> String {
    let mut cut = words.len().min(123);
    while !words.is_char_boundary(cut) {
        cut -= 1;
    }
    words[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_fits_the_frame_and_never_splits_a_character() {
        assert_eq!(close_reason("idle"), "idle");
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= 123 && r.chars().all(|c| c == 'é'), "{}", r.len());
    }
}
