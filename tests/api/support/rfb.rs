//! A small VNC client for the console tests, speaking to vmdeck's console WebSocket as noVNC
//! would: open the socket (cookie, `Origin`), read the preamble, then RFB 3.8 with security
//! None, a 32-bit pixel format and Raw rectangles only (plus the DesktopSize pseudo-encoding,
//! so a mode change of the guest's screen cannot leave the framebuffer the wrong size), read
//! into a framebuffer that tests compare pixel by pixel.
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one read may wait for the server.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// X11 keysym of Escape.
pub const ESCAPE: u32 = 0xff1b;

/// Opens the console WebSocket at `path` (which carries its ticket) on the server at `base`
/// (`http://…`), sending `cookie` and `Origin: origin` when given. `Err(status)` when the
/// server refuses the upgrade.
pub async fn open(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, u16> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let mut req = url.as_str().into_client_request().expect("a WebSocket request");
    if let Some(cookie) = cookie {
        req.headers_mut().insert("Cookie", cookie.parse().expect("a cookie header"));
    }
    if let Some(origin) = origin {
        req.headers_mut().insert("Origin", origin.parse().expect("an Origin header"));
    }
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(res))) => Err(res.status().as_u16()),
        Ok(Err(e)) => panic!("the WebSocket upgrade at {path} failed: {e}"),
        Err(_) => panic!("the WebSocket upgrade at {path} got no answer within {PATIENCE:?}"),
    }
}

/// How a console ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame (code, reason).
    Closed(u16, String),
    /// The connection ended without a close frame, or failed.
    Gone(String),
    /// A text message where RFB was expected.
    Text(String),
    /// Nothing arrived in time.
    Timeout,
}

/// The next message that is not a ping or pong.
async fn next(ws: &mut Ws, limit: Duration) -> Result<Message, Ended> {
    loop {
        return match tokio::time::timeout(limit, ws.next()).await {
            Err(_) => Err(Ended::Timeout),
            Ok(None) => Err(Ended::Gone("the connection ended".into())),
            Ok(Some(Err(e))) => Err(Ended::Gone(e.to_string())),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(frame)))) => Err(match frame {
                Some(f) => Ended::Closed(u16::from(f.code), f.reason.into_owned()),
                None => Ended::Closed(1005, String::new()),
            }),
            Ok(Some(Ok(m))) => Ok(m),
        };
    }
}

/// The console's first message: `{"ok":true,"mode":…}` or `{"ok":false,"error":…}`.
pub async fn preamble(ws: &mut Ws) -> serde_json::Value {
    match next(ws, PATIENCE).await {
        Ok(Message::Text(text)) => serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the preamble is not JSON ({e}): {text}")),
        other => panic!("the console's first message is not its text preamble: {other:?}"),
    }
}

/// What follows a refusing preamble: the server closes (a close frame or the end).
pub async fn after_refusal(ws: &mut Ws) -> Ended {
    match next(ws, Duration::from_secs(5)).await {
        Ok(m) => panic!("a refused console sent more than its preamble: {m:?}"),
        Err(e) => e,
    }
}

/// An RFB session over a console WebSocket whose preamble was read.
pub struct Rfb {
    ws: Ws,
    pending: Vec<u8>,
    pos: usize,
    pub width: usize,
    pub height: usize,
    /// 0x00RRGGBB, row by row.
    pub fb: Vec<u32>,
    pub name: String,
    /// Bytes of RFB received.
    pub received: u64,
}

impl Rfb {
    /// RFB 3.8, security None, ClientInit (not shared: the server forces it), a 32-bit
    /// true-colour pixel format and encodings Raw and DesktopSize.
    pub async fn handshake(ws: Ws) -> Result<Rfb, Ended> {
        let mut c = Rfb {
            ws,
            pending: Vec::new(),
            pos: 0,
            width: 0,
            height: 0,
            fb: Vec::new(),
            name: String::new(),
            received: 0,
        };
        let version = c.bytes(12).await?;
        assert!(version.starts_with(b"RFB 003."), "not an RFB server: {version:?}");
        c.send(b"RFB 003.008\n".to_vec()).await?;
        let n = c.u8().await?;
        if n == 0 {
            let len = c.u32().await? as usize;
            let why = c.bytes(len).await?;
            panic!("the VNC server refused: {}", String::from_utf8_lossy(&why));
        }
        let types = c.bytes(usize::from(n)).await?;
        assert!(types.contains(&1), "the VNC server offers no security None: {types:?}");
        c.send(vec![1]).await?;
        let result = c.u32().await?;
        assert_eq!(result, 0, "security None failed");
        c.send(vec![0]).await?;
        c.width = usize::from(c.u16().await?);
        c.height = usize::from(c.u16().await?);
        c.fb = vec![0; c.width * c.height];
        let _server_format = c.bytes(16).await?;
        let len = c.u32().await? as usize;
        c.name = String::from_utf8_lossy(&c.bytes(len).await?).into_owned();
        // 32 bpp, depth 24, little-endian, true colour, 8 bits a channel: 0x00RRGGBB.
        c.send(vec![0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).await?;
        let mut encodings = vec![2, 0, 0, 2];
        encodings.extend_from_slice(&0i32.to_be_bytes());
        encodings.extend_from_slice(&(-223i32).to_be_bytes());
        c.send(encodings).await?;
        Ok(c)
    }

    pub async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Ended> {
        self.ws.send(Message::Binary(bytes)).await.map_err(|e| Ended::Gone(e.to_string()))
    }

    async fn bytes(&mut self, n: usize) -> Result<Vec<u8>, Ended> {
        while self.pending.len() - self.pos < n {
            match next(&mut self.ws, PATIENCE).await? {
                Message::Binary(data) => {
                    self.received += data.len() as u64;
                    if self.pos > 0 {
                        self.pending.drain(..self.pos);
                        self.pos = 0;
                    }
                    self.pending.extend_from_slice(&data);
                }
                Message::Text(t) => return Err(Ended::Text(t)),
                other => return Err(Ended::Gone(format!("unexpected message {other:?}"))),
            }
        }
        let out = self.pending[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    async fn u8(&mut self) -> Result<u8, Ended> {
        Ok(self.bytes(1).await?[0])
    }

    async fn u16(&mut self) -> Result<u16, Ended> {
        let b = self.bytes(2).await?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    async fn u32(&mut self) -> Result<u32, Ended> {
        let b = self.bytes(4).await?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Asks for the whole screen (not incremental: the server answers at once) and reads
    /// server messages until that update is in the framebuffer.
    pub async fn refresh(&mut self) -> Result<(), Ended> {
        let (w, h) = (self.width as u16, self.height as u16);
        let mut req = vec![3, 0, 0, 0, 0, 0];
        req.extend_from_slice(&w.to_be_bytes());
        req.extend_from_slice(&h.to_be_bytes());
        self.send(req).await?;
        loop {
            match self.u8().await? {
                0 => return self.update().await,
                1 => {
                    let _pad = self.u8().await?;
                    let _first = self.u16().await?;
                    let n = usize::from(self.u16().await?);
                    self.bytes(6 * n).await?;
                }
                2 => {}
                3 => {
                    self.bytes(3).await?;
                    let len = self.u32().await? as usize;
                    self.bytes(len).await?;
                }
                t => panic!("the VNC server sent a message of unknown type {t}"),
            }
        }
    }

    async fn update(&mut self) -> Result<(), Ended> {
        let _pad = self.u8().await?;
        let rects = self.u16().await?;
        for _ in 0..rects {
            let x = usize::from(self.u16().await?);
            let y = usize::from(self.u16().await?);
            let w = usize::from(self.u16().await?);
            let h = usize::from(self.u16().await?);
            let encoding = self.u32().await? as i32;
            match encoding {
                0 => {
                    let data = self.bytes(w * h * 4).await?;
                    for row in 0..h {
                        for col in 0..w {
                            let (px, py) = (x + col, y + row);
                            if px >= self.width || py >= self.height {
                                continue;
                            }
                            let i = (row * w + col) * 4;
                            let p = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], 0]);
                            self.fb[py * self.width + px] = p;
                        }
                    }
                }
                -223 => {
                    self.width = w;
                    self.height = h;
                    self.fb = vec![0; w * h];
                }
                e => panic!("the VNC server sent encoding {e}, which was not asked for"),
            }
        }
        Ok(())
    }

    /// A key press and release (X11 keysym).
    pub async fn key(&mut self, keysym: u32) -> Result<(), Ended> {
        for down in [1, 0] {
            let mut m = vec![4, down, 0, 0];
            m.extend_from_slice(&keysym.to_be_bytes());
            self.send(m).await?;
        }
        Ok(())
    }

    /// A pointer event: buttons mask and position.
    pub async fn pointer(&mut self, mask: u8, x: u16, y: u16) -> Result<(), Ended> {
        let mut m = vec![5, mask];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.send(m).await
    }

    /// Reads (and discards) until the server ends the console or `limit` passes.
    pub async fn wait_closed(&mut self, limit: Duration) -> Ended {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ended::Timeout;
            }
            match next(&mut self.ws, left).await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }

    /// Closes from the browser's side and waits (bounded) for the server to finish.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = self.wait_closed(Duration::from_secs(5)).await;
    }
}

/// Whether every pixel has the same colour.
pub fn blank(fb: &[u32]) -> bool {
    fb.iter().all(|&p| Some(&p) == fb.first())
}

/// How many pixels differ (all of them when the sizes differ).
pub fn differing(a: &[u32], b: &[u32]) -> usize {
    if a.len() != b.len() {
        return a.len().max(b.len());
    }
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}
