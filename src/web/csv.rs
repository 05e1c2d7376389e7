//! CSV downloads: one writer for every export, with one escaping policy.
//!
//! Fields are quoted as RFC 4180 needs (the `csv` crate), and a text cell that a spreadsheet
//! would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return: OWASP's
//! rule) gets a leading `'`, so a VM named `=HYPERLINK(...)` on a hypervisor, or a user name
//! typed at the login form, stays text when an admin opens the file. Numbers, negative ones
//! included, are left as they are.

use rocket::http::{ContentType, Header};

/// Rows written per chunk of the response.
const CHUNK_ROWS: usize = 256;

/// A CSV download, as a response. Its rows are written as the response is sent, a chunk at a
/// time, so a 10,000-VM report never holds the whole file in memory (only its rows).
pub struct Csv {
    pub filename: String,
    chunks: Box<dyn Iterator<Item = Vec<u8>> + Send>,
}

impl Csv {
    /// A header row and data rows, each cell through [`neutralize`].
    pub fn build<R, C>(filename: &str, header: &[&str], rows: R) -> Csv
    where
        R: IntoIterator<Item = Vec<C>>,
        R::IntoIter: Send + 'static,
        C: AsRef<str>,
    {
        let header = record(header.iter().copied());
        let mut rows = rows.into_iter();
        let body = std::iter::from_fn(move || {
            let mut chunk = Vec::new();
            for row in rows.by_ref().take(CHUNK_ROWS) {
                chunk.extend(record(row.iter().map(|c| c.as_ref())));
            }
            (!chunk.is_empty()).then_some(chunk)
        });
        Csv {
            filename: filename.to_string(),
            chunks: Box::new(std::iter::once(header).chain(body)),
        }
    }

    /// The whole file (tests).
    #[cfg(test)]
    fn into_bytes(self) -> Vec<u8> {
        self.chunks.flatten().collect()
    }
}

/// One CSV record, quoted as RFC 4180 needs and neutralised.
fn record<'a>(cells: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing into memory cannot fail: the csv crate's errors here are I/O errors of the
    // underlying writer, and a Vec never returns one.
    let _ = w.write_record(cells.map(|c| neutralize(c).into_owned()));
    w.into_inner().unwrap_or_default()
}

/// A cell as written: text that a spreadsheet would read as a formula is prefixed with `'`.
pub fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.parse::<f64>().is_err() {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

impl<'r> rocket::response::Responder<'r, 'static> for Csv {
    fn respond_to(self, _: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        rocket::Response::build()
            .header(ContentType::CSV)
            .header(Header::new(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", self.filename),
            ))
            .streamed_body(Chunks { chunks: self.chunks, current: Default::default() })
            .ok()
    }
}

/// The chunks as a byte stream for Rocket: each is written when the previous one was sent.
struct Chunks {
    chunks: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    current: std::io::Cursor<Vec<u8>>,
}

impl tokio::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            let pos = this.current.position() as usize;
            let rest = &this.current.get_ref()[pos..];
            if !rest.is_empty() {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                this.current.set_position((pos + n) as u64);
                return std::task::Poll::Ready(Ok(()));
            }
            match this.chunks.next() {
                Some(chunk) => this.current = std::io::Cursor::new(chunk),
                // End of file: nothing put in `buf`.
                None => return std::task::Poll::Ready(Ok(())),
            }
        }
    }
}

/// A file name made of a VM name: letters, digits and `-`, everything else `_`.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_become_text_and_numbers_stay_numbers() {
        for hostile in ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
        {
            assert_eq!(neutralize(hostile), format!("'{hostile}"), "{hostile:?}");
        }
        for plain in ["web-01", "-12.5", "+3", "", "a=b", "2026-11-30 12:00:00 UTC"] {
            assert_eq!(neutralize(plain), plain, "{plain:?}");
        }
        let csv = Csv::build("x.csv", &["name", "n"], [vec!["=cmd|' /C calc'!A0", "-1"]]);
        assert_eq!(
            String::from_utf8(csv.into_bytes()).unwrap(),
            "name,n\n'=cmd|' /C calc'!A0,-1\n"
        );
    }
}
