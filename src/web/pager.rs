//! Paging a list: which page was asked for, how many there are, and the links around it.

use serde::Serialize;

use super::Notices;

/// A page of a longer list, as the `pager` macro shows it.
#[derive(Debug, Serialize)]
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    /// 1-based numbers of the first and last row shown (0 and 0 for an empty list).
    pub first: usize,
    pub last: usize,
    pub matched: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// The page `requested` (a query value; empty means the first) of `matched` rows, `size` per
    /// page. A page that does not exist is reported and the nearest one shown. `href` builds
    /// the link to a page.
    pub fn new(
        requested: &str,
        matched: usize,
        size: usize,
        href: impl Fn(usize) -> String,
        notices: &mut Notices,
    ) -> Pager {
        let size = size.max(1);
        let pages = matched.div_ceil(size).max(1);
        let mut page = match requested.trim() {
            "" => 1,
            p => match p.parse::<usize>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    notices.push(format!("There is no page {p:?}: showing the first page."));
                    1
                }
            },
        };
        if page > pages {
            notices.push(format!("There are only {pages} page(s): showing the last one."));
            page = pages;
        }
        let first = (page - 1) * size;
        Pager {
            page,
            pages,
            first: if matched == 0 { 0 } else { first + 1 },
            last: (first + size).min(matched),
            matched,
            prev: (page > 1).then(|| href(page - 1)),
            next: (page < pages).then(|| href(page + 1)),
        }
    }

    /// Rows to skip before this page.
    pub fn offset(&self) -> usize {
        self.first.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_clamped_and_linked() {
        let mut notices = Vec::new();
        let p = Pager::new("3", 250, 100, |n| format!("/x?page={n}"), &mut notices);
        assert_eq!((p.page, p.pages, p.first, p.last), (3, 3, 201, 250));
        assert_eq!(p.prev.as_deref(), Some("/x?page=2"));
        assert_eq!(p.next, None);
        assert_eq!(p.offset(), 200);
        assert!(notices.is_empty());
        let p = Pager::new("9", 250, 100, |n| n.to_string(), &mut notices);
        assert_eq!(p.page, 3);
        let p = Pager::new("zero", 0, 100, |n| n.to_string(), &mut notices);
        assert_eq!((p.page, p.pages, p.first, p.last), (1, 1, 0, 0));
        assert_eq!(notices.len(), 2, "{notices:?}");
    }
}
