//! nginx's config grammar as `ngx_conf_read_token` reads it: words (bare, "double" or 'single'
//! quoted, backslash escapes), `;`, `{ ... }` blocks and `#` comments, into a directive tree
//! with the line each directive starts on. No directive is interpreted here.

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<Word>,
    /// 1-based line of the directive's name.
    pub line: usize,
    /// `Some` for a block directive (`server { ... }`), even an empty one.
    pub block: Option<Vec<Directive>>,
}

/// One argument, unescaped as nginx does; `$variables` stay in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// The quote it was written with, if any: `'GET'` and `GET` mean the same to nginx, but a
    /// reader recognises their directive better when it is printed back as written.
    pub quote: Option<char>,
}

/// Where and why a file is not nginx config. The messages follow nginx's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {kind}")]
pub struct SyntaxError {
    pub line: usize,
    pub kind: SyntaxErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxErrorKind {
    /// A character glued to a closing quote (`"a"b`); nginx wants a space there.
    #[error("unexpected {0:?} after a quoted string")]
    AfterQuote(char),
    #[error("unexpected \";\": a directive needs a name")]
    LoneSemicolon,
    #[error("unexpected \"{{\": a block needs a name")]
    LoneBrace,
    #[error("unexpected \"}}\"{0}")]
    CloseBrace(&'static str),
    #[error("a quoted string starts here and never ends")]
    UnterminatedQuote,
    #[error("\"{0}\" is never ended with \";\" or \"{{\" before the end of the file")]
    UnterminatedDirective(String),
    #[error("the \"{0}\" block that opens here is never closed with \"}}\"")]
    UnclosedBlock(String),
    #[error("blocks nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Real configs nest four or five deep; the limit keeps a hostile file from exhausting the
/// stack of the recursive parse.
const MAX_DEPTH: usize = 64;

/// Parses a whole file into its top-level directives.
pub fn parse(text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let tokens = tokenize(text)?;
    let mut at = 0;
    block(&tokens, &mut at, None, 0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Word, usize),
    Semicolon(usize),
    Open(usize),
    Close(usize),
}

/// The state machine of `ngx_conf_read_token`: a word ends at whitespace, `;` or `{` (but `}`
/// only ends a word that has not started, and `${` stays inside one); `#` starts a comment only
/// where a word could start; a quoted word must be followed by whitespace, `;`, `{` or `)`.
fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut word: Option<(String, Option<char>, usize)> = None;
    let mut comment = false;
    let mut escaped = false;
    let mut variable = false;
    let mut need_space = false;

    for ch in text.chars() {
        if comment {
            if ch == '\n' {
                comment = false;
                line += 1;
            }
            continue;
        }
        if escaped {
            escaped = false;
            if let Some((raw, _, _)) = word.as_mut() {
                raw.push(ch);
            }
            if ch == '\n' {
                line += 1;
            }
            continue;
        }
        if need_space {
            need_space = false;
            match ch {
                ';' => {
                    tokens.push(Token::Semicolon(line));
                    continue;
                }
                '{' => {
                    tokens.push(Token::Open(line));
                    continue;
                }
                // `if ($a ~ 'x')`: the `)` becomes a word of its own, as in nginx.
                ')' => {}
                c if is_space(c) => {
                    if c == '\n' {
                        line += 1;
                    }
                    continue;
                }
                c => return Err(error(line, SyntaxErrorKind::AfterQuote(c))),
            }
        }
        match word.as_mut() {
            None => match ch {
                c if is_space(c) => {}
                ';' => tokens.push(Token::Semicolon(line)),
                '{' => tokens.push(Token::Open(line)),
                '}' => tokens.push(Token::Close(line)),
                '#' => comment = true,
                '"' | '\'' => word = Some((String::new(), Some(ch), line)),
                c => {
                    escaped = c == '\\';
                    variable = c == '$';
                    word = Some((c.to_string(), None, line));
                }
            },
            Some((raw, quote, _)) => {
                if ch == '{' && variable {
                    raw.push(ch);
                    variable = false;
                    continue;
                }
                variable = ch == '$';
                let ends = match *quote {
                    Some(q) => ch == q,
                    None => is_space(ch) || ch == ';' || ch == '{',
                };
                if !ends {
                    escaped = ch == '\\';
                    raw.push(ch);
                } else if let Some((raw, quote, start)) = word.take() {
                    let text = unescape(&raw);
                    tokens.push(Token::Word(Word { text, quote }, start));
                    match ch {
                        ';' => tokens.push(Token::Semicolon(line)),
                        '{' => tokens.push(Token::Open(line)),
                        _ if quote.is_some() => need_space = true,
                        _ => {}
                    }
                }
            }
        }
        if ch == '\n' {
            line += 1;
        }
    }
    match word {
        Some((_, Some(_), start)) => Err(error(start, SyntaxErrorKind::UnterminatedQuote)),
        Some((raw, None, start)) => Ok({
            tokens.push(Token::Word(
                Word {
                    text: unescape(&raw),
                    quote: None,
                },
                start,
            ));
            tokens
        }),
        None => Ok(tokens),
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// nginx keeps `\"`, `\'` and `\\` as the character and turns `\t`, `\r`, `\n` into control
/// characters; any other backslash stays, so regexes like `\.` reach PCRE intact.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(q @ ('"' | '\'' | '\\')) => {
                out.push(q);
                chars.next();
            }
            Some('t') => {
                out.push('\t');
                chars.next();
            }
            Some('r') => {
                out.push('\r');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// The directives up to the `}` that closes `opener` (name and line), or to the end of the
/// file at the top level.
fn block(
    tokens: &[Token],
    at: &mut usize,
    opener: Option<(&str, usize)>,
    depth: usize,
) -> Result<Vec<Directive>, SyntaxError> {
    if depth > MAX_DEPTH {
        let line = opener.map_or(1, |(_, l)| l);
        return Err(error(line, SyntaxErrorKind::TooDeep));
    }
    let mut out = Vec::new();
    let mut words: Vec<(Word, usize)> = Vec::new();
    loop {
        let Some(token) = tokens.get(*at) else {
            if let Some((first, line)) = words.first() {
                let name = first.text.clone();
                return Err(error(*line, SyntaxErrorKind::UnterminatedDirective(name)));
            }
            return match opener {
                Some((name, line)) => Err(error(
                    line,
                    SyntaxErrorKind::UnclosedBlock(name.to_string()),
                )),
                None => Ok(out),
            };
        };
        *at += 1;
        match token {
            Token::Word(w, line) => words.push((w.clone(), *line)),
            Token::Semicolon(line) => {
                let d = directive(std::mem::take(&mut words), None)
                    .ok_or_else(|| error(*line, SyntaxErrorKind::LoneSemicolon))?;
                out.push(d);
            }
            Token::Open(line) => {
                let Some((first, first_line)) = words.first() else {
                    return Err(error(*line, SyntaxErrorKind::LoneBrace));
                };
                let inner = block(tokens, at, Some((&first.text, *first_line)), depth + 1)?;
                if let Some(d) = directive(std::mem::take(&mut words), Some(inner)) {
                    out.push(d);
                }
            }
            Token::Close(line) => {
                if !words.is_empty() {
                    return Err(error(
                        *line,
                        SyntaxErrorKind::CloseBrace(": the directive before it has no \";\""),
                    ));
                }
                return match opener {
                    Some(_) => Ok(out),
                    None => Err(error(
                        *line,
                        SyntaxErrorKind::CloseBrace(": no block is open"),
                    )),
                };
            }
        }
    }
}

fn directive(words: Vec<(Word, usize)>, block: Option<Vec<Directive>>) -> Option<Directive> {
    let mut words = words.into_iter();
    let (name, line) = words.next()?;
    Some(Directive {
        name: name.text,
        args: words.map(|(w, _)| w).collect(),
        line,
        block,
    })
}

fn error(line: usize, kind: SyntaxErrorKind) -> SyntaxError {
    SyntaxError { line, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directive tree printed back compactly: `name arg 'arg' { inner; }`.
    fn shape(ds: &[Directive]) -> String {
        ds.iter()
            .map(|d| {
                let mut s = d.name.clone();
                for a in &d.args {
                    s.push(' ');
                    match a.quote {
                        Some(q) => s.push_str(&format!("{q}{}{q}", a.text)),
                        None => s.push_str(&a.text),
                    }
                }
                match &d.block {
                    Some(inner) => s.push_str(&format!(" {{ {}}}", shape(inner))),
                    None => s.push(';'),
                }
                s.push(' ');
                s
            })
            .collect()
    }

    /// (input, the tree it parses to) — each row one rule of nginx's tokenizer.
    #[test]
    fn grammar() {
        let rows: &[(&str, &str)] = &[
            ("listen 8443 ssl;", "listen 8443 ssl; "),
            ("server { listen 80; }", "server { listen 80; } "),
            ("events {}", "events { } "),
            ("a  \t b\r\n  c ;", "a b c; "),
            // Comments run to the end of the line, but only where a word could start.
            ("# all of it\nlisten 80; # trailing", "listen 80; "),
            ("a#b c;", "a#b c; "),
            // A directive may span lines (the seed's X-Forwarded-For).
            (
                "proxy_set_header X-Forwarded-For\n    $proxy_add_x_forwarded_for;",
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; ",
            ),
            // Quotes: either kind, escapes unescaped, quoted text keeps spaces and ;{}#.
            (
                "set $u \"nexus_docker_get\";",
                "set $u \"nexus_docker_get\"; ",
            ),
            ("add_header X 'a b;{}#';", "add_header X 'a b;{}#'; "),
            (r#"set $x "a\"b\\c";"#, r#"set $x "a"b\c"; "#),
            (r"set $x 'it\'s';", r"set $x 'it's'; "),
            ("set $x \"\";", "set $x \"\"; "),
            // A quote in the middle of a word is an ordinary character.
            ("set $x a\"b;", "set $x a\"b; "),
            // `if` conditions: `(` glued to the variable, `)` split off after a quote.
            (
                "if ($request_uri ~ '/search') { set $u put; }",
                "if ($request_uri ~ '/search' ) { set $u put; } ",
            ),
            (
                "if ( $request_method ~* 'GET') { }",
                "if ( $request_method ~* 'GET' ) { } ",
            ),
            // `${var}` stays in its word; a `}` inside a word does not close a block.
            ("set $x ${host}x;", "set $x ${host}x; "),
            ("set $x a}b;", "set $x a}b; "),
            // A `{` ends a bare word and opens the block.
            ("location /v2{ }", "location /v2 { } "),
            // Backslash escapes outside quotes too; `\.` is kept for PCRE.
            (r"location ~ \.php$ { }", r"location ~ \.php$ { } "),
            // nginx keeps a backslash before anything it does not unescape.
            (r"set $x a\ b;", r"set $x a\ b; "),
            // UTF-8 in comments and words (the seed's comments are Chinese).
            ("# 设置默认使用推送代理\nset $u put;", "set $u put; "),
        ];
        for (input, want) in rows {
            let got = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(shape(&got), *want, "{input:?}");
        }
    }

    /// (input, line, the start of the message) — errors name the line a reader should look at.
    #[test]
    fn errors() {
        let rows: &[(&str, usize, &str)] = &[
            ("listen 80", 1, "\"listen\" is never ended"),
            (
                "server {\n  listen 80;\n",
                1,
                "the \"server\" block that opens here",
            ),
            (
                "http {\n server {\n  listen 80;\n}\n",
                1,
                "the \"http\" block",
            ),
            ("listen 80;\n}\n", 2, "unexpected \"}\": no block is open"),
            (
                "server {\n listen 80\n}",
                3,
                "unexpected \"}\": the directive before it",
            ),
            ("\n;", 2, "unexpected \";\""),
            ("{ listen 80; }", 1, "unexpected \"{\""),
            (
                "set $x \"abc;\nlisten 80;\n",
                1,
                "a quoted string starts here",
            ),
            ("set $x 'a'b;", 1, "unexpected 'b' after a quoted string"),
            ("a\n\n  \"x\"#;", 3, "unexpected '#'"),
        ];
        for (input, line, want) in rows {
            let e = parse(input).expect_err(input);
            assert_eq!(e.line, *line, "{input:?}: {e}");
            assert!(e.kind.to_string().starts_with(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn lines_are_counted_through_comments_quotes_and_escapes() {
        let text = "# one\n\"two\nstill two\" three;\nfour\\\nfive;\n  six {\n}\n";
        let got = parse(text).expect("parses");
        let lines: Vec<(String, usize)> = got.iter().map(|d| (d.name.clone(), d.line)).collect();
        assert_eq!(
            lines,
            vec![
                ("two\nstill two".to_string(), 2),
                ("four\\\nfive".to_string(), 4),
                ("six".to_string(), 6),
            ]
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "a {".repeat(MAX_DEPTH + 2) + &"}".repeat(MAX_DEPTH + 2);
        let e = parse(&deep).expect_err("too deep");
        assert_eq!(e.kind, SyntaxErrorKind::TooDeep);
        let fine = "a {".repeat(10) + &"}".repeat(10);
        assert!(parse(&fine).is_ok());
    }
}
