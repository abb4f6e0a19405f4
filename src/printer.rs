//! xe's output: records, lists and `--minimal`.
//!
//! A record prints as `key: value` lines where keys are padded to
//! `4 + longest key`: the first on the right, the others on the left. Every
//! record is followed by two empty lines. `--minimal` prints, once at the
//! end, the first field of each record (or each list item) joined by `,`,
//! with `,` and `\` escaped.

/// How `<class>-list` and `<class>-param-list` print (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// xe's records (or `--minimal`).
    Xe,
    /// JSON with typed values (docs/cli.md has the schema).
    Json,
    /// A table with a header row, for people.
    Table,
}

impl Format {
    /// The `format=` value.
    pub fn parse(value: Option<&str>) -> Result<Format, String> {
        match value {
            None => Ok(Format::Xe),
            Some("json") => Ok(Format::Json),
            Some("table") => Ok(Format::Table),
            Some(other) => Err(format!(
                "Failed to parse parameter 'format': expected 'json' or 'table', got '{other}'"
            )),
        }
    }
}

/// One record: (label, value) pairs in display order.
pub type Record = Vec<(String, String)>;

/// The output of one command.
#[derive(Debug, Default)]
pub struct Out {
    minimal: bool,
    parts: Vec<String>,
    text: String,
}

impl Out {
    pub fn new(minimal: bool) -> Self {
        Out {
            minimal,
            ..Out::default()
        }
    }

    pub fn is_minimal(&self) -> bool {
        self.minimal
    }

    /// Print records.
    pub fn table(&mut self, records: Vec<Record>) {
        if self.minimal {
            if records.iter().all(|r| !r.is_empty()) {
                let firsts: Vec<String> = records.iter().map(|r| escape(&r[0].1)).collect();
                self.parts.push(firsts.join(","));
            }
            return;
        }
        for r in &records {
            self.text.push_str(&format_record(r));
            self.text.push_str("\n\n");
        }
    }

    /// Print lines.
    pub fn list(&mut self, items: Vec<String>) {
        if self.minimal {
            let escaped: Vec<String> = items.iter().map(|s| escape(s)).collect();
            self.parts.push(escaped.join(","));
            return;
        }
        for i in items {
            self.text.push_str(&i);
            self.text.push('\n');
        }
    }

    /// Print a JSON document.
    pub fn json(&mut self, value: &serde_json::Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.text.push_str(&text);
        self.text.push('\n');
    }

    /// Print rows under a header, as a table.
    pub fn grid(&mut self, header: Vec<String>, rows: Vec<Vec<String>>) {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(header);
        for row in rows {
            table.add_row(row);
        }
        self.text.push_str(&table.to_string());
        self.text.push('\n');
    }

    /// Everything for stdout.
    pub fn finish(self) -> String {
        if self.minimal {
            let mut parts = self.parts;
            parts.reverse();
            format!("{}\n", parts.join(","))
        } else {
            self.text
        }
    }
}

/// One record in xe's layout, ending with a newline.
pub fn format_record(r: &[(String, String)]) -> String {
    let maxlen = 4 + r.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut lines = Vec::with_capacity(r.len());
    for (i, (k, v)) in r.iter().enumerate() {
        let key = if i == 0 {
            format!("{k:<maxlen$}")
        } else {
            format!("{k:>maxlen$}")
        };
        lines.push(format!("{key}: {v}"));
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> Record {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn records_match_xe_byte_for_byte() {
        let mut out = Out::new(false);
        out.table(vec![
            rec(&[
                ("uuid ( RO)", "0b2c"),
                ("name-label ( RW)", "web01"),
                ("power-state ( RO)", "running"),
            ]),
            rec(&[
                ("uuid ( RO)", "5e1f"),
                ("name-label ( RW)", "db01"),
                ("power-state ( RO)", "halted"),
            ]),
        ]);
        assert_eq!(
            out.finish(),
            "uuid ( RO)           : 0b2c\n     name-label ( RW): web01\n    power-state ( RO): running\n\n\n\
             uuid ( RO)           : 5e1f\n     name-label ( RW): db01\n    power-state ( RO): halted\n\n\n"
        );
    }

    #[test]
    fn empty_values_keep_the_trailing_space() {
        let r = format_record(&rec(&[("uuid ( RO)", "1f6e"), ("name-description ( RW)", "")]));
        assert_eq!(r, "uuid ( RO)                : 1f6e\n    name-description ( RW): \n");
    }

    #[test]
    fn minimal_prints_first_fields_escaped_on_one_line() {
        let mut out = Out::new(true);
        out.table(vec![rec(&[("uuid", "a,b")]), rec(&[("uuid", r"c\d")])]);
        assert_eq!(out.finish(), "a\\,b,c\\\\d\n");
        assert_eq!(Out::new(true).finish(), "\n");
    }
}
