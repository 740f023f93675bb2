//! The README's table of settings, generated from their declaration.
//!
//! This file exists so that the documentation cannot drift from the code:
//! `fanout config-reference` prints this table, `scripts/update-readme-table` pastes it into
//! README.md, and a test in `tests/cli.rs` fails when the README differs.

use super::settings::SETTINGS;

/// The README's configuration table, generated from [`SETTINGS`].
pub fn reference_table() -> String {
    let mut out = String::from(
        "| flag | environment | TOML key | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `--{}` | `{}` | `{}` | {} | {} |\n",
            s.flag(),
            s.env(),
            s.key,
            s.default.map_or("".to_owned(), |d| format!("`{d}`")),
            s.help.replace('|', "\\|")
        ));
    }
    out
}
