//! What the browser may say to a VM's VNC server (RFB, RFC 6143, plus the extensions noVNC
//! and QEMU use). [`ClientFilter`] reads the browser's side of the stream as it passes:
//!
//! - every console: the `ClientInit` message's shared flag is forced on, so one user's
//!   console never disconnects another's (several people may watch one VM);
//! - a view-only console (a viewer's): every input message — keys, QEMU's extended keys,
//!   pointer, clipboard, desktop resize, XVP power requests, audio — is dropped here, on the
//!   server, whatever the page does; only the messages that ask for the screen pass. A message
//!   type it does not know closes the console rather than being passed on unread.
//!
//! Streaming: headers of at most 20 bytes are held between reads, bodies are passed or skipped
//! by count, so a client cannot make the filter buffer a large message.

use thiserror::Error;

use super::Mode;

/// The stream cannot be filtered safely: the console is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    #[error("the browser did not start with an RFB protocol version")]
    NotRfb,
    #[error("view-only consoles need RFB 3.7 or later (the browser asked for 3.{0})")]
    OldProtocol(u32),
    #[error(
        "view-only consoles support VNC security types None and VNC password; the browser chose \
         type {0}"
    )]
    Security(u8),
    #[error("the browser sent an RFB message of unknown type {0}")]
    UnknownMessage(u8),
    #[error("the browser sent clipboard text of {0} bytes, more than a console takes")]
    TooLong(u64),
}

/// The longest clipboard text a console passes on or skips (noVNC sends what the user copied).
pub const MAX_CLIPBOARD: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Version,
    Security,
    /// The 16-byte response to VNC password authentication.
    Challenge,
    ClientInit,
    Messages,
    /// Passed on unread: an interactive console after its handshake.
    Raw,
}

/// Reads the browser → VM half of one console.
#[derive(Debug)]
pub struct ClientFilter {
    mode: Mode,
    phase: Phase,
    /// The current message's header, until it is complete.
    head: Vec<u8>,
    /// Bytes of the current message's body still to pass on, or to skip.
    pass: u64,
    skip: u64,
    dropped: u64,
}

impl ClientFilter {
    pub fn new(mode: Mode) -> ClientFilter {
        ClientFilter {
            mode,
            phase: Phase::Version,
            head: Vec::with_capacity(20),
            pass: 0,
            skip: 0,
            dropped: 0,
        }
    }

    /// Input messages dropped so far (view-only consoles).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether everything from here on passes unread (`feed` then only copies).
    pub fn is_raw(&self) -> bool {
        self.phase == Phase::Raw && self.pass == 0 && self.skip == 0
    }

    /// Reads `input` (any split of the stream) and appends what may reach the VM to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FilterError> {
        while !input.is_empty() {
            if self.pass > 0 {
                let n = input.len().min(usize::try_from(self.pass).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.pass -= n as u64;
                continue;
            }
            if self.skip > 0 {
                let n = input.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                input = &input[n..];
                self.skip -= n as u64;
                continue;
            }
            if self.phase == Phase::Raw {
                out.extend_from_slice(input);
                return Ok(());
            }
            // Grow the header one step at a time: how long it is depends on its first bytes.
            let need = self.need()?;
            if self.head.len() < need {
                let n = (need - self.head.len()).min(input.len());
                self.head.extend_from_slice(&input[..n]);
                input = &input[n..];
                continue;
            }
            self.decide(out)?;
        }
        // A header completed by the last bytes is decided now, not at the next read.
        while self.phase != Phase::Raw && !self.head.is_empty() && self.head.len() == self.need()? {
            self.decide(out)?;
        }
        Ok(())
    }

    /// How long the current header is, as far as its bytes so far tell.
    fn need(&self) -> Result<usize, FilterError> {
        let h = &self.head;
        Ok(match self.phase {
            Phase::Version => 12,
            Phase::Security | Phase::ClientInit => 1,
            Phase::Challenge => 16,
            Phase::Raw => 0,
            Phase::Messages => match h.first() {
                None => 1,
                Some(0) => 20,   // SetPixelFormat
                Some(2) => 4,    // SetEncodings (+ 4 × count)
                Some(3) => 10,   // FramebufferUpdateRequest
                Some(4) => 8,    // KeyEvent
                Some(5) => 6,    // PointerEvent
                Some(6) => 8,    // ClientCutText (+ length)
                Some(150) => 10, // EnableContinuousUpdates
                Some(248) => 9,  // ClientFence (+ length)
                Some(250) => 4,  // XVP (shutdown, reboot, reset)
                Some(251) => 8,  // SetDesktopSize (+ 16 × screens)
                Some(255) => match h.get(1) {
                    None => 2,
                    Some(0) => 12, // QEMU extended key event
                    Some(1) => match h.get(2..4) {
                        None => 4,
                        Some([0, 0 | 1]) => 4, // QEMU audio enable / disable
                        Some([0, 2]) => 10,    // QEMU audio set format
                        Some(_) => return Err(FilterError::UnknownMessage(255)),
                    },
                    Some(_) => return Err(FilterError::UnknownMessage(255)),
                },
                Some(&t) => return Err(FilterError::UnknownMessage(t)),
            },
        })
    }

    /// Acts on a complete header: passes or drops it and sets what follows.
    fn decide(&mut self, out: &mut Vec<u8>) -> Result<(), FilterError> {
        let head = std::mem::take(&mut self.head);
        let view_only = self.mode == Mode::ViewOnly;
        match self.phase {
            Phase::Version => {
                let minor = version_minor(&head).ok_or(FilterError::NotRfb)?;
                out.extend_from_slice(&head);
                self.phase = match (minor >= 7, view_only) {
                    (true, _) => Phase::Security,
                    // 3.3: the server picks the security type, which this half cannot see.
                    (false, false) => Phase::Raw,
                    (false, true) => return Err(FilterError::OldProtocol(minor)),
                };
            }
            Phase::Security => {
                out.extend_from_slice(&head);
                self.phase = match (head[0], view_only) {
                    (1, _) => Phase::ClientInit,
                    (2, _) => Phase::Challenge,
                    (_, false) => Phase::Raw,
                    (t, true) => return Err(FilterError::Security(t)),
                };
            }
            Phase::Challenge => {
                out.extend_from_slice(&head);
                self.phase = Phase::ClientInit;
            }
            Phase::ClientInit => {
                // Shared: never make the VNC server drop the other viewers of this VM.
                out.push(1);
                self.phase = if view_only { Phase::Messages } else { Phase::Raw };
            }
            Phase::Messages => self.message(&head, out)?,
            Phase::Raw => out.extend_from_slice(&head),
        }
        Ok(())
    }

    /// A view-only console's message: requests for the screen pass, input is dropped.
    fn message(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<(), FilterError> {
        let u16_at = |i: usize| u64::from(u16::from_be_bytes([head[i], head[i + 1]]));
        match head[0] {
            0 | 3 | 150 => out.extend_from_slice(head),
            2 => {
                out.extend_from_slice(head);
                self.pass = 4 * u16_at(2);
            }
            248 => {
                out.extend_from_slice(head);
                self.pass = u64::from(head[8]);
            }
            6 => {
                let len = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                // Negative: the extended clipboard's form, whose size is the absolute value.
                let len = u64::from(len.unsigned_abs());
                if len > MAX_CLIPBOARD {
                    return Err(FilterError::TooLong(len));
                }
                self.skip = len;
                self.dropped += 1;
            }
            251 => {
                self.skip = 16 * u64::from(head[6]);
                self.dropped += 1;
            }
            // Keys, pointer, XVP, QEMU keys and audio: input, dropped.
            _ => self.dropped += 1,
        }
        Ok(())
    }
}

/// The minor version of `RFB 003.00x\n`, or None when it is not one.
fn version_minor(head: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("RFB ")?.strip_suffix('\n')?;
    let (major, minor) = rest.split_once('.')?;
    let digits = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) || major != "003" {
        return None;
    }
    minor.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noVNC-like session: handshake (3.8, security None, shared flag 0), then a pixel
    /// format, encodings, an update request, a key press and release, pointer moves, a QEMU
    /// extended key, clipboard text, a fence, continuous updates, a desktop resize and XVP.
    fn session() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut m: Vec<Vec<u8>> = vec![b"RFB 003.008\n".to_vec(), vec![1], vec![0]];
        let mut pixel = vec![0u8; 20];
        pixel[4] = 32;
        m.push(pixel);
        m.push(
            [
                vec![2, 0, 0, 3],
                7i32.to_be_bytes().to_vec(),
                (-223i32).to_be_bytes().to_vec(),
                0i32.to_be_bytes().to_vec(),
            ]
            .concat(),
        );
        m.push(vec![3, 1, 0, 0, 0, 0, 3, 32, 2, 88]);
        m.push(vec![4, 1, 0, 0, 0, 0, 0, 0x61]);
        m.push(vec![4, 0, 0, 0, 0, 0, 0, 0x61]);
        m.push(vec![5, 1, 0, 10, 0, 20]);
        m.push(vec![255, 0, 0, 1, 0, 0, 0xff, 0xe3, 0, 0, 0, 0x1d]);
        m.push([vec![6, 0, 0, 0], 5u32.to_be_bytes().to_vec(), b"hello".to_vec()].concat());
        m.push([vec![248, 0, 0, 0, 0, 0, 0, 1, 3], vec![9, 9, 9]].concat());
        m.push(vec![150, 1, 0, 0, 0, 0, 3, 32, 2, 88]);
        m.push([vec![251, 0, 3, 32, 2, 88, 1, 0], vec![0u8; 16]].concat());
        m.push(vec![250, 0, 1, 2]);
        m.push(vec![255, 1, 0, 0]);
        m.push(vec![255, 1, 0, 2, 3, 2, 0, 0, 0xac, 0x44]);
        (m.concat(), m)
    }

    fn run(mode: Mode, stream: &[u8], chunk: usize) -> (Result<(), FilterError>, Vec<u8>, u64) {
        let mut f = ClientFilter::new(mode);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            if let Err(e) = f.feed(piece, &mut out) {
                return (Err(e), out, f.dropped());
            }
        }
        (Ok(()), out, f.dropped())
    }

    #[test]
    fn view_only_passes_screen_requests_and_drops_every_input_however_the_stream_is_split() {
        let (stream, m) = session();
        let mut expected = [m[0].clone(), m[1].clone(), vec![1]].concat();
        for i in [3, 4, 5, 11, 12] {
            expected.extend_from_slice(&m[i]);
        }
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let (r, out, dropped) = run(Mode::ViewOnly, &stream, chunk);
            assert_eq!(r, Ok(()), "chunk {chunk}");
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(
                dropped, 9,
                "keys ×2, pointer, QEMU key, clipboard, resize, XVP, audio ×2: chunk {chunk}"
            );
        }
    }

    #[test]
    fn interactive_passes_everything_but_forces_the_shared_flag() {
        let (stream, m) = session();
        let (r, out, dropped) = run(Mode::Interactive, &stream, 5);
        assert_eq!(r, Ok(()));
        let mut expected = stream.clone();
        expected[12 + 1] = 1;
        assert_eq!(out, expected);
        assert_eq!(dropped, 0);
        assert_eq!(m[2], vec![0], "the client asked for exclusive access");
    }

    #[test]
    fn vnc_password_authentication_passes_its_response() {
        let stream = [
            b"RFB 003.008\n".to_vec(),
            vec![2],
            vec![7u8; 16],
            vec![0],
            vec![4, 1, 0, 0, 0, 0, 0, 0x61],
            vec![3, 0, 0, 0, 0, 0, 0, 10, 0, 10],
        ]
        .concat();
        let (r, out, dropped) = run(Mode::ViewOnly, &stream, 3);
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            [
                b"RFB 003.008\n".to_vec(),
                vec![2],
                vec![7u8; 16],
                vec![1],
                vec![3, 0, 0, 0, 0, 0, 0, 10, 0, 10]
            ]
            .concat()
        );
        assert_eq!(dropped, 1);
    }

    #[test]
    fn what_cannot_be_read_safely_closes_a_view_only_console() {
        let start = |rest: &[u8]| [b"RFB 003.008\n".as_slice(), &[1, 0], rest].concat();
        let cases: Vec<(Vec<u8>, FilterError)> = vec![
            (b"GET / HTTP/1.1\r\n".to_vec(), FilterError::NotRfb),
            (b"RFB 003.003\n".to_vec(), FilterError::OldProtocol(3)),
            ([b"RFB 003.008\n".as_slice(), &[19]].concat(), FilterError::Security(19)),
            (start(&[99]), FilterError::UnknownMessage(99)),
            (start(&[255, 7]), FilterError::UnknownMessage(255)),
            (start(&[6, 0, 0, 0, 0x7f, 0, 0, 0]), FilterError::TooLong(0x7f00_0000)),
        ];
        for (stream, want) in cases {
            let (r, _, _) = run(Mode::ViewOnly, &stream, 4);
            assert_eq!(r, Err(want), "{stream:?}");
        }
        // An interactive console passes other security types and RFB 3.3 on unread.
        for stream in
            [b"RFB 003.003\n\x00abc".to_vec(), [b"RFB 003.008\n".as_slice(), &[19, 9, 9]].concat()]
        {
            let (r, out, _) = run(Mode::Interactive, &stream, 4);
            assert_eq!((r, out), (Ok(()), stream));
        }
    }
}
