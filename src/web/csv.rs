//! CSV downloads: one writer for every export, with one escaping policy.
//!
//! Fields are quoted as RFC 4180 needs (the `csv` crate), and a text cell that a spreadsheet
//! would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return: OWASP's
//! rule) gets a leading `'`, so a VM named `=HYPERLINK(...)` on a hypervisor, or a user name
//! typed at the login form, stays text when an admin opens the file. Numbers, negative ones
//! included, are left as they are.

use rocket::http::{ContentType, Header};

use super::AppError;

/// A CSV download, as a response.
pub struct Csv {
    pub filename: String,
    pub body: Vec<u8>,
}

impl Csv {
    /// Writes a header row and data rows, each cell through [`neutralize`].
    pub fn build<R, C>(filename: &str, header: &[&str], rows: R) -> Result<Csv, AppError>
    where
        R: IntoIterator<Item = Vec<C>>,
        C: AsRef<str>,
    {
        let fail = |e: csv::Error| AppError::Internal(anyhow::Error::new(e).context("csv"));
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(header).map_err(fail)?;
        for row in rows {
            w.write_record(row.iter().map(|c| neutralize(c.as_ref()).into_owned()))
                .map_err(fail)?;
        }
        let body = w.into_inner().map_err(|e| AppError::Internal(anyhow::anyhow!("csv: {e}")))?;
        Ok(Csv { filename: filename.to_string(), body })
    }
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
            .sized_body(self.body.len(), std::io::Cursor::new(self.body))
            .ok()
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
        let csv = Csv::build("x.csv", &["name", "n"], [vec!["=cmd|' /C calc'!A0", "-1"]]).unwrap();
        assert_eq!(String::from_utf8(csv.body).unwrap(), "name,n\n'=cmd|' /C calc'!A0,-1\n");
    }
}
