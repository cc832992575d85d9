//! What became of each nginx directive, kept as a note and printed as a TOML comment that names
//! the directive's line and what it was, so a reader can hold the two files side by side.

use super::tokenizer::Directive;

/// Where a note is printed: above the key it explains, or in the two lists at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    Listen,
    Hostnames,
    /// How requests were split between upstreams (`set`, `if`, `proxy_pass`).
    Routing,
    Put,
    Get,
    Web,
    Tls,
    Timeouts,
    Headers,
    /// dockgate does it itself, or it does not apply.
    Dropped,
    /// No equivalent: for the reader to check.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub slot: Slot,
    /// 0 for a note about the file as a whole.
    pub line: usize,
    /// The directive as written (on one line), empty for a note about the file.
    pub directive: String,
    pub says: String,
}

impl Note {
    pub fn new(slot: Slot, d: &Directive, says: impl Into<String>) -> Note {
        Note {
            slot,
            line: d.line,
            directive: show(d),
            says: says.into(),
        }
    }

    /// A note about no one directive (something the file lacks).
    pub fn general(slot: Slot, says: impl Into<String>) -> Note {
        Note {
            slot,
            line: 0,
            directive: String::new(),
            says: says.into(),
        }
    }

    /// `# 12: listen 8443 ssl;` and the explanation below it, wrapped, as TOML comment lines.
    pub fn comment(&self) -> String {
        let mut out = String::new();
        if self.line > 0 {
            out.push_str(&format!("# {}: {}\n", self.line, clean(&self.directive)));
            out.push_str(&wrap(&clean(&self.says), "#     "));
        } else {
            out.push_str(&wrap(&clean(&self.says), "# "));
        }
        out
    }
}

/// A directive on one line as nginx would read it back: quotes kept, a block's directives
/// inline while short, `{ ... }` once that would make a long line.
pub fn show(d: &Directive) -> String {
    let mut s = d.name.clone();
    for a in &d.args {
        // `if ($a ~ 'x')` tokenizes with `)` as a word of its own; glue it back.
        if a.text != ")" || a.quote.is_some() {
            s.push(' ');
        }
        match a.quote {
            Some(q) => s.push_str(&format!("{q}{}{q}", a.text)),
            None => s.push_str(&a.text),
        }
    }
    match &d.block {
        None => s.push(';'),
        Some(inner) => {
            let body: Vec<String> = inner.iter().map(show).collect();
            let inline = format!("{s} {{ {} }}", body.join(" "));
            s = if inner.is_empty() {
                format!("{s} {{ }}")
            } else if inline.len() <= 90 {
                inline
            } else {
                format!("{s} {{ ... }}")
            };
        }
    }
    s
}

/// TOML comments may not hold control characters other than tab (a newline would end the
/// comment and make the rest of the text a key); quoted nginx words can hold any of them.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '\t' => vec!['\t'],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

/// Word-wraps `text` at 99 columns, each line starting with `prefix`.
fn wrap(text: &str, prefix: &str) -> String {
    const WIDTH: usize = 99;
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && prefix.len() + line.len() + 1 + word.len() > WIDTH {
            out.push_str(&format!("{prefix}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{prefix}{line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::tokenizer::parse;

    #[test]
    fn directives_read_back_as_written() {
        let rows: &[(&str, &str)] = &[
            ("listen  8443   ssl;", "listen 8443 ssl;"),
            (
                "if ( $request_method ~* 'GET') {\n set $upstream \"nexus_docker_get\";\n}",
                "if ( $request_method ~* 'GET') { set $upstream \"nexus_docker_get\"; }",
            ),
            (
                "if ($request_uri ~ '/search') { set $u put; }",
                "if ($request_uri ~ '/search') { set $u put; }",
            ),
            ("events {}", "events { }"),
            (
                "upstream nexus_docker_put {\n    server 192.0.2.11:9897;\n}",
                "upstream nexus_docker_put { server 192.0.2.11:9897; }",
            ),
        ];
        for (input, want) in rows {
            let d = parse(input).expect("parses");
            assert_eq!(show(&d[0]), *want);
        }
        let long = parse("location / { proxy_pass http://nexus_web; proxy_connect_timeout 3600; proxy_send_timeout 3600; }").expect("parses");
        assert_eq!(show(&long[0]), "location / { ... }");
    }

    #[test]
    fn comments_stay_comments() {
        let d = parse("add_header X \"a\nb = 1\r\";").expect("parses");
        let c = Note::new(Slot::Unknown, &d[0], "why").comment();
        assert_eq!(c, "# 1: add_header X \"a\\nb = 1\\r\";\n#     why\n");
        let long = Note::general(Slot::Hostnames, "word ".repeat(40).trim().to_string()).comment();
        assert!(long.lines().count() > 1);
        assert!(
            long.lines().all(|l| l.starts_with("# ") && l.len() <= 99),
            "{long}"
        );
    }
}
