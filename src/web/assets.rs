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

#[cfg(test)]
mod tests {
    use super::*;

    /// The relative module specifiers `text` imports (`import … from "x"`, `export … from
    /// "x"`, `import "x"`): enough for noVNC's and vmdeck's own modules, which use no other form.
    fn imports(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for marker in ["from \"", "from '", "import \"", "import '"] {
            let quote = &marker[marker.len() - 1..];
            let mut rest = text;
            while let Some(at) = rest.find(marker) {
                rest = &rest[at + marker.len()..];
                let Some(end) = rest.find(quote) else { break };
                if rest[..end].starts_with('.') {
                    found.push(&rest[..end]);
                }
            }
        }
        found
    }

    /// `spec` relative to the file `from` (both under `static/`), with `.`/`..` resolved.
    fn resolve(from: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for part in spec.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }

    #[test]
    fn every_module_a_built_in_script_imports_is_built_in_too() {
        let scripts: Vec<String> =
            Static::iter().filter(|n| n.ends_with(".js")).map(|n| n.to_string()).collect();
        assert!(scripts.iter().any(|n| n == "novnc/core/rfb.js"), "noVNC is vendored");
        let mut checked = 0;
        for name in &scripts {
            let file = Static::get(name).unwrap();
            let text = std::str::from_utf8(&file.data).unwrap();
            for spec in imports(text) {
                let target = resolve(name, spec);
                assert!(
                    Static::get(&target).is_some(),
                    "{name} imports {spec:?}, but static/{target} is not built in: the browser \
                     would get a 404 and the console page would not start"
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} imports found: the scan is broken");
        // The console's own imports.
        let console =
            std::str::from_utf8(&Static::get("console.js").unwrap().data).unwrap().to_string();
        assert!(imports(&console).contains(&"./novnc/core/rfb.js"));
    }

    #[test]
    fn scripts_are_served_as_javascript_for_module_loading() {
        let (kind, _) = asset(PathBuf::from("novnc/core/rfb.js")).expect("rfb.js is built in");
        assert_eq!(kind, ContentType::JavaScript, "browsers refuse a module of another type");
        let (kind, _) = asset(PathBuf::from("console.js")).expect("console.js is built in");
        assert_eq!(kind, ContentType::JavaScript);
    }
}
