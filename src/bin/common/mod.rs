//! Helpers shared by the benchmark binaries.

/// A fresh random secret key: the release profile requires one.
pub fn secret_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
