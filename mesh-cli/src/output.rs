//! Output formats: aligned tables for people, JSON/YAML for scripts.

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{CliError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML; returns false for `table` so the caller renders its own table.
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    if format == Format::Table {
        return Ok(false);
    }
    // Through JSON's data model for both formats: YAML then has exactly the JSON shape (oneofs
    // as `{header: x}` mappings, not YAML tags), and enum numbers become names in both.
    let mut v = serde_json::to_value(value)
        .map_err(|e| CliError::server(format!("cannot encode output: {e}")))?;
    crate::enums::name_enums(&mut v);
    let text = match format {
        Format::Yaml => serde_norway::to_string(&v)
            .map_err(|e| CliError::server(format!("cannot encode YAML: {e}")))?,
        _ => serde_json::to_string_pretty(&v)
            .map(|s| s + "\n")
            .map_err(|e| CliError::server(format!("cannot encode JSON: {e}")))?,
    };
    print!("{text}");
    Ok(true)
}

/// A table with left-aligned columns separated by two spaces; empty cells show as `-`.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| if c.is_empty() { "-".to_string() } else { c })
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}
