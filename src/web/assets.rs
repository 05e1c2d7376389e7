//! The pages' templates and the static files, built into the binary (`templates/`, `static/`),
//! so one file is the whole server: it runs from any directory, on a machine without the
//! source. `template_dir` / `static_dir` still replace them for customisation.
//!
//! Static files are served from memory. Templates are unpacked at startup into the data
//! directory (`<data_dir>/templates`, rewritten at every start, so an upgrade brings its own),
//! because Rocket's template fairing loads a directory: templates registered in memory would
//! lose their content type (it comes from the file name's `.html`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rocket::http::ContentType;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "templates/"]
struct Templates;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Static;

/// Writes the built-in templates into `<data_dir>/templates` (owner-only), replacing what an
/// earlier start left there, and returns that directory.
pub fn unpack_templates(data_dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = data_dir.join("templates");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for name in Templates::iter() {
        let Some(file) = Templates::get(&name) else { continue };
        let path = dir.join(name.as_ref());
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        std::fs::write(&path, file.data.as_ref())?;
    }
    Ok(dir)
}

/// A built-in static file, by its path under `static/`.
#[rocket::get("/static/<path..>")]
pub fn asset(path: PathBuf) -> Option<(ContentType, Cow<'static, [u8]>)> {
    let file = Static::get(path.to_str()?)?;
    let kind = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(ContentType::from_extension)
        .unwrap_or(ContentType::Binary);
    Some((kind, file.data))
}
