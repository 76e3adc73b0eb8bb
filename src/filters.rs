//! containerd's filter syntax, used by List- and Subscribe-style requests.
//!
//! Pure parsing and matching; no threads. Services call [`Filter::parse_all`] on the request's
//! `filters` field, turn a [`FilterError`] into `InvalidArgument` with its text unchanged, then
//! call [`Filter::matches`] once per candidate object through an [`Adaptor`].
//!
//! The rules, as containerd's `pkg/filters` applies them:
//!
//! 1. A request carries a list of filter strings; an object matches when any of them matches.
//!    An empty list, or an empty string anywhere in it, matches everything.
//! 2. One string is `selector(,selector)*`; every selector must match.
//! 3. A selector is a field path alone (the field is present), or the path followed by `==`,
//!    `!=` or `~=` and a value. An absent field reads as the empty string for `!=` and `~=`,
//!    and never satisfies `==`.
//! 4. A field path is components joined by `.`; a component is a run of `[A-Za-z0-9_]` or a
//!    `"`-quoted string with Go escapes (`labels."com.example/key"`).
//! 5. A value is a `"`-quoted string, or (for `~=` only) a string quoted with `/…/` or `|…|`,
//!    or a bare run of printable characters up to a `,` or white space. `|` is a quote, never
//!    an OR operator. White space may precede or follow an operator, but not end a value.
//! 6. `~=` values are compiled with `regex-lite` while parsing; containerd compiles them
//!    lazily and lets a bad one match nothing, here it is a parse error.

use std::collections::HashMap;

use regex_lite::Regex;

/// Something filters can look at: the value at a field path (components already unquoted),
/// or `None` when the object has no such field.
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Option<String>;
}

impl<F: Fn(&[String]) -> Option<String>> Adaptor for F {
    fn field(&self, path: &[String]) -> Option<String> {
        self(path)
    }
}

/// Looks up `labels.<key>` the way containerd's adaptors do: the key is every component after
/// `labels` joined with `.`, and an object without labels has none of them.
pub fn labels_field(labels: &HashMap<String, String>, path: &[String]) -> Option<String> {
    match path.split_first() {
        Some((head, key)) if head == "labels" => map_field(labels, key),
        _ => None,
    }
}

/// The map lookup behind [`labels_field`], for other map-valued fields (`annotations`):
/// `key` is the path after the map's own name.
pub fn map_field(map: &HashMap<String, String>, key: &[String]) -> Option<String> {
    if map.is_empty() {
        return None;
    }
    map.get(&key.join(".")).cloned()
}

/// A filter string that does not parse. The text is exactly what containerd's `ParseAll`
/// returns, class suffix included, so it can go on the wire unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The input breaks the grammar at byte `pos`.
    #[error("filters: parse error: {}: {reason}: invalid argument", locate(.input, *.pos))]
    Syntax {
        input: String,
        pos: usize,
        reason: String,
    },
    /// The `~=` value starting at byte `pos` is not a regular expression regex-lite accepts.
    #[error(
        "filters: parse error: {}: error parsing regexp: {reason}: invalid argument",
        locate(.input, *.pos)
    )]
    Regex {
        input: String,
        pos: usize,
        reason: String,
    },
}

impl FilterError {
    /// The byte offset in the filter string where parsing stopped.
    pub fn position(&self) -> usize {
        match self {
            FilterError::Syntax { pos, .. } | FilterError::Regex { pos, .. } => *pos,
        }
    }
}

/// Marks the character at `pos` the way containerd does: `[before >|c|< after]`, or the whole
/// input in brackets when the error is at its end.
fn locate(input: &str, pos: usize) -> String {
    match input.get(pos..).and_then(|rest| rest.chars().next()) {
        Some(c) => {
            let end = pos + c.len_utf8();
            format!("[{} >|{c}|< {}]", &input[..pos], &input[end..])
        }
        None => format!("[{input}]"),
    }
}

/// A parsed request filter: alternatives, each a conjunction of selectors.
#[derive(Debug, Clone)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::match_all()
    }
}

impl Filter {
    /// A filter that matches everything (one alternative with no conditions).
    pub fn match_all() -> Filter {
        Filter { any: vec![vec![]] }
    }

    /// Parses a request's filter list. Every string is parsed, so a bad one is reported even
    /// when another is empty; the first error wins.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        if filters.is_empty() {
            return Ok(Filter::match_all());
        }
        let any = filters
            .iter()
            .map(|filter| parse_selectors(filter.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Filter { any })
    }

    /// Parses one filter string; the empty string matches everything.
    pub fn parse(filter: &str) -> Result<Filter, FilterError> {
        Ok(Filter {
            any: vec![parse_selectors(filter)?],
        })
    }

    /// Whether the object behind `adaptor` satisfies any alternative.
    pub fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        self.any
            .iter()
            .any(|all| all.iter().all(|selector| selector.matches(adaptor)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Present,
    Equal,
    NotEqual,
    Matches,
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operator::Present => "?",
            Operator::Equal => "==",
            Operator::NotEqual => "!=",
            Operator::Matches => "~=",
        })
    }
}

#[derive(Debug, Clone)]
struct Selector {
    /// `None` when a quoted component decodes to bytes that are not UTF-8: no object can
    /// have such a field, so it reads as absent.
    path: Option<Vec<String>>,
    operator: Operator,
    /// Raw bytes, because `\xff`-style escapes may produce non-UTF-8 values, which equal nothing.
    value: Vec<u8>,
    regex: Option<Regex>,
}

impl Selector {
    fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        let field = self.path.as_deref().and_then(|path| adaptor.field(path));
        match self.operator {
            Operator::Present => field.is_some(),
            Operator::Equal => field.is_some_and(|v| v.as_bytes() == self.value.as_slice()),
            Operator::NotEqual => field.unwrap_or_default().as_bytes() != self.value.as_slice(),
            Operator::Matches => self
                .regex
                .as_ref()
                .is_some_and(|re| re.is_match(&field.unwrap_or_default())),
        }
    }
}

fn parse_selectors(input: &str) -> Result<Vec<Selector>, FilterError> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    Parser {
        input,
        scanner: Scanner::new(input),
    }
    .selectors()
}

/// One step of the scanner: a character, the end, or a character it refuses (NUL, U+FFFD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ch {
    Eof,
    Illegal,
    Char(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Eof,
    Illegal,
    Quoted,
    Value,
    Field,
    Separator,
    Operator,
    /// A character that starts no token.
    Other,
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_quote_char(c: char) -> bool {
    matches!(c, '"' | '/' | '|')
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '~')
}

fn is_value_char(c: char) -> bool {
    c != ',' && !c.is_whitespace() && !c.is_control()
}

fn digit_value(ch: Ch) -> u32 {
    match ch {
        Ch::Char(c) => c.to_digit(16).unwrap_or(16),
        _ => 16,
    }
}

/// Splits a filter string into tokens. Whether a bare run is a value or a field depends on
/// whether an operator came last, hence the `after_operator` state.
struct Scanner<'a> {
    input: &'a str,
    /// Start of the character last read.
    pos: usize,
    /// End of the character last read.
    end: usize,
    after_operator: bool,
    /// The first problem met; later ones are consequences of it.
    problem: Option<&'static str>,
}

impl<'a> Scanner<'a> {
    fn new(input: &'a str) -> Self {
        Scanner {
            input,
            pos: 0,
            end: 0,
            after_operator: false,
            problem: None,
        }
    }

    fn note(&mut self, problem: &'static str) {
        self.problem.get_or_insert(problem);
    }

    fn next(&mut self) -> Ch {
        if self.pos >= self.input.len() {
            return Ch::Eof;
        }
        self.pos = self.end;
        let Some(c) = self.input[self.end..].chars().next() else {
            return Ch::Eof;
        };
        self.end += c.len_utf8();
        match c {
            '\u{FFFD}' => {
                self.note("rune error");
                Ch::Illegal
            }
            '\0' => {
                self.note("unexpected null");
                Ch::Illegal
            }
            c => Ch::Char(c),
        }
    }

    fn peek(&mut self) -> Ch {
        let (pos, end) = (self.pos, self.end);
        let ch = self.next();
        (self.pos, self.end) = (pos, end);
        ch
    }

    /// Reads while `keep` holds for the next character.
    fn eat_while(&mut self, keep: fn(char) -> bool) {
        while matches!(self.peek(), Ch::Char(c) if keep(c)) {
            self.next();
        }
    }

    /// The next token: its start, kind and text.
    fn scan(&mut self) -> (usize, Token, &'a str) {
        let mut ch = self.next();
        loop {
            let start = self.pos;
            let token = match ch {
                Ch::Eof => return (self.pos, Token::Eof, ""),
                Ch::Illegal => return (self.pos, Token::Illegal, ""),
                Ch::Char(c) if c.is_whitespace() => {
                    ch = self.next();
                    continue;
                }
                Ch::Char(c) if is_quote_char(c) => {
                    if self.scan_quoted(c) {
                        Token::Quoted
                    } else {
                        Token::Illegal
                    }
                }
                Ch::Char(',' | '.') => {
                    self.after_operator = false;
                    Token::Separator
                }
                Ch::Char(c) if is_operator_char(c) => {
                    self.eat_while(is_operator_char);
                    self.after_operator = true;
                    Token::Operator
                }
                Ch::Char(_) if self.after_operator => {
                    self.eat_while(is_value_char);
                    self.after_operator = false;
                    Token::Value
                }
                Ch::Char(c) if is_field_char(c) => {
                    self.eat_while(is_field_char);
                    Token::Field
                }
                Ch::Char(_) => return (self.pos, Token::Other, ""),
            };
            return (start, token, &self.input[start..self.end]);
        }
    }

    /// Reads up to the closing `quote`, checking escapes; false when the literal is bad.
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        let mut ch = self.next();
        loop {
            match ch {
                Ch::Char(c) if c == quote => return legal,
                Ch::Eof | Ch::Illegal | Ch::Char('\n') => {
                    self.note("quoted literal not terminated");
                    return false;
                }
                Ch::Char('\\') => {
                    let (after, ok) = self.scan_escape(quote);
                    legal &= ok;
                    ch = after;
                }
                Ch::Char(_) => ch = self.next(),
            }
        }
    }

    /// Checks the escape after a backslash; returns the character following it.
    fn scan_escape(&mut self, quote: char) -> (Ch, bool) {
        let ch = self.next();
        match ch {
            Ch::Char(c) if "abfnrtv\\".contains(c) || c == quote => (self.next(), true),
            Ch::Char('0'..='7') => self.scan_digits(ch, 8, 3),
            Ch::Char('x') => {
                let first = self.next();
                self.scan_digits(first, 16, 2)
            }
            Ch::Char('u') => {
                let first = self.next();
                self.scan_digits(first, 16, 4)
            }
            Ch::Char('U') => {
                let first = self.next();
                self.scan_digits(first, 16, 8)
            }
            _ => {
                self.note("illegal escape sequence");
                (ch, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: Ch, base: u32, mut count: usize) -> (Ch, bool) {
        while count > 0 && digit_value(ch) < base {
            ch = self.next();
            count -= 1;
        }
        if count > 0 {
            self.note("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }
}

/// Decodes a scanned quoted literal (quotes included) with Go's escape rules. The scanner has
/// already checked the shape of every escape; what is left to reject is out-of-range values.
fn unquote(literal: &str) -> Option<Vec<u8>> {
    let mut chars = literal.chars();
    let quote = chars.next()?;
    if chars.next_back()? != quote {
        return None;
    }
    let mut out = Vec::with_capacity(literal.len());
    let mut utf8 = [0; 4];
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        let escape = chars.next()?;
        let mut number = |digits: usize, radix: u32| -> Option<u32> {
            (0..digits).try_fold(0u32, |acc, _| {
                Some(acc * radix + chars.next()?.to_digit(radix)?)
            })
        };
        let byte = match escape {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => b'\n',
            'r' => b'\r',
            't' => b'\t',
            'v' => 0x0b,
            '\\' => b'\\',
            c if c == quote => {
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            'x' => u8::try_from(number(2, 16)?).ok()?,
            '0'..='7' => {
                let rest = number(2, 8)?;
                u8::try_from(escape.to_digit(8)? * 64 + rest).ok()?
            }
            'u' | 'U' => {
                let code = number(if escape == 'u' { 4 } else { 8 }, 16)?;
                if code > 0x10_FFFF {
                    return None;
                }
                // Surrogate halves encode as U+FFFD, as Go does.
                let c = char::from_u32(code).unwrap_or('\u{FFFD}');
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(byte);
    }
    Some(out)
}

struct Parser<'a> {
    input: &'a str,
    scanner: Scanner<'a>,
}

impl Parser<'_> {
    fn error(&self, pos: usize, reason: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            input: self.input.to_string(),
            pos,
            reason: reason.into(),
        }
    }

    fn scanner_error(&self, pos: usize) -> FilterError {
        self.error(pos, self.scanner.problem.unwrap_or("illegal input"))
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = vec![self.selector()?];
        loop {
            match self.scanner.peek() {
                Ch::Eof => return Ok(all),
                Ch::Char(',') => {
                    self.scanner.scan();
                    all.push(self.selector()?);
                }
                other => {
                    let shown = match other {
                        Ch::Char(c) => c,
                        _ => '\u{FFFD}',
                    };
                    return Err(self.error(self.scanner.end, format!("unexpected input: {shown}")));
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.field_path()?;
        if matches!(self.scanner.peek(), Ch::Eof | Ch::Char(',')) {
            return Ok(Selector {
                path,
                operator: Operator::Present,
                value: Vec::new(),
                regex: None,
            });
        }
        let operator = self.operator()?;
        let (pos, value) = self.value(operator == Operator::Matches)?;
        let regex = if operator == Operator::Matches {
            let pattern = std::str::from_utf8(&value).map_err(|_| FilterError::Regex {
                input: self.input.to_string(),
                pos,
                reason: "invalid UTF-8".to_string(),
            })?;
            Some(Regex::new(pattern).map_err(|err| FilterError::Regex {
                input: self.input.to_string(),
                pos,
                reason: err.to_string(),
            })?)
        } else {
            None
        };
        Ok(Selector {
            path,
            operator,
            value,
            regex,
        })
    }

    fn field_path(&mut self) -> Result<Option<Vec<String>>, FilterError> {
        let mut path = vec![self.field()?];
        while self.scanner.peek() == Ch::Char('.') {
            self.scanner.scan();
            path.push(self.field()?);
        }
        Ok(path
            .into_iter()
            .map(|component| String::from_utf8(component).ok())
            .collect())
    }

    fn field(&mut self) -> Result<Vec<u8>, FilterError> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Field => Ok(text.as_bytes().to_vec()),
            Token::Quoted => self.unquote(pos, text, false),
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, "expected field or quoted")),
        }
    }

    fn operator(&mut self) -> Result<Operator, FilterError> {
        let (pos, token, text) = self.scanner.scan();
        match token {
            Token::Operator => match text {
                "==" => Ok(Operator::Equal),
                "!=" => Ok(Operator::NotEqual),
                "~=" => Ok(Operator::Matches),
                other => Err(self.error(pos, format!("unsupported operator \"{other}\""))),
            },
            Token::Illegal => Err(self.scanner_error(pos)),
            _ => Err(self.error(pos, r#"expected an operator ("=="|"!="|"~=")"#)),
        }
    }

    fn value(&mut self, regex_quotes: bool) -> Result<(usize, Vec<u8>), FilterError> {
        let (pos, token, text) = self.scanner.scan();
        let value = match token {
            Token::Value | Token::Field => text.as_bytes().to_vec(),
            Token::Quoted => self.unquote(pos, text, regex_quotes)?,
            Token::Illegal => return Err(self.scanner_error(pos)),
            _ => return Err(self.error(pos, "expected value or quoted")),
        };
        Ok((pos, value))
    }

    fn unquote(
        &self,
        pos: usize,
        literal: &str,
        regex_quotes: bool,
    ) -> Result<Vec<u8>, FilterError> {
        if !regex_quotes && !literal.starts_with('"') {
            return Err(self.error(pos, "invalid quote encountered"));
        }
        unquote(literal).ok_or_else(|| self.error(pos, "unquoting failed: quote syntax error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Entry {
        name: &'static str,
        other: &'static str,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Entry {
        // The adaptor of containerd's own test: a field is present when non-empty, labels
        // are looked up by the joined rest of the path.
        fn field(&self, path: &[String]) -> Option<String> {
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
            match path.first().map(String::as_str) {
                Some("name") => non_empty(self.name),
                Some("other") => non_empty(self.other),
                Some("labels") => self.labels.get(&path[1..].join(".")).cloned(),
                _ => None,
            }
        }
    }

    fn entry(name: &'static str, other: &'static str, labels: &[(&str, &str)]) -> Entry {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Entry {
            name,
            other,
            labels,
        }
    }

    fn corpus() -> Vec<Entry> {
        vec![
            entry("foo", "", &[("foo", "true")]),
            entry("bar", "", &[]),
            entry(
                "foo",
                "",
                &[("foo", "present"), ("more complex label", "present")],
            ),
            entry("bar", "", &[("bar", "true")]),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ""#, "present")],
            ),
            entry(
                "fooer",
                "",
                &[(r#"more complex label with \ and ".post"#, "present")],
            ),
            entry("baz", "too complex, yo", &[]),
            entry("bazo", "abc", &[]),
            entry("compound", "", &[("foo", "omg_asdf.asdf-qwer")]),
        ]
    }

    /// Indexes into the corpus of the entries `filter` selects.
    fn selected(filter: &Filter) -> Vec<usize> {
        corpus()
            .iter()
            .enumerate()
            .filter(|(_, e)| filter.matches(*e))
            .map(|(i, _)| i)
            .collect()
    }

    fn parse_error(input: &str) -> String {
        match Filter::parse(input) {
            Ok(filter) => panic!("{input:?} parsed: {filter:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn containerd_filter_table_selects_the_same_entries() {
        let all: Vec<usize> = (0..9).collect();
        let cases: &[(&str, &[usize])] = &[
            ("", &all),
            ("name", &all),
            ("labels.foo", &[0, 2, 8]),
            ("labels.foo,name", &[0, 2, 8]),
            ("labels.foo==true", &[0]),
            ("labels.foo==omg_asdf.asdf-qwer", &[8]),
            ("name==bar", &[1, 3]),
            ("name!=bar", &[0, 2, 4, 5, 6, 7, 8]),
            ("name==bar,labels.bar", &[3]),
            (r#"other=="too complex, yo""#, &[6]),
            ("other~=[abc]+,name!=foo", &[6, 7]),
            ("other~=/[abc]+/,name!=foo", &[6, 7]),
            ("other~=/[abc]{1,2}/,name!=foo", &[6, 7]),
            (r#"other~=/[abc]{0,1}"\//,name!=foo"#, &[]),
            ("name==bar,labels.bar==true", &[3]),
            ("name==bar,labels.bar==wrong", &[]),
            (r#"name==foo,labels."more complex label""#, &[2]),
            (
                r#"labels."more complex label with \\ and \""==present"#,
                &[4],
            ),
            (
                r#"labels."more complex label with \\ and \"".post==present"#,
                &[5],
            ),
        ];
        for (input, expected) in cases {
            let filter = Filter::parse(input).unwrap_or_else(|err| panic!("{input:?}: {err}"));
            assert_eq!(selected(&filter), *expected, "{input:?}");
        }
    }

    #[test]
    fn containerd_error_table_gives_the_same_messages() {
        let cases = [
            (
                "labels.|foo|==omg_asdf.asdf-qwer",
                "[labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
            ),
            (
                r#"labels.?"more complex label with \\ and \"".post==present"#,
                r#"[labels. >|?|< "more complex label with \\ and \"".post==present]: expected field or quoted"#,
            ),
            ("name==foo,", "[name==foo,]: expected field or quoted"),
            ("labels.", "[labels.]: expected field or quoted"),
            (
                "image~=,id?=?fbaq",
                "[image~= >|,|< id?=?fbaq]: expected value or quoted",
            ),
            (
                "labels.ns/key==value",
                "[labels.ns >|/|< key==value]: quoted literal not terminated",
            ),
            (
                "labels.key==/value",
                "[labels.key== >|/|< value]: quoted literal not terminated",
            ),
        ];
        for (input, located) in cases {
            assert_eq!(
                parse_error(input),
                format!("filters: parse error: {located}: invalid argument"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn edge_errors_match_containerd_output() {
        // Expected texts were produced by containerd's pkg/filters.ParseAll.
        let cases = [
            ("name==foo ", "[name==foo >| |< ]: unexpected input:  "),
            (
                "a , b",
                r#"[a  >|,|<  b]: expected an operator ("=="|"!="|"~=")"#,
            ),
            ("name ", r#"[name ]: expected an operator ("=="|"!="|"~=")"#),
            (
                "labels.foo-bar",
                r#"[labels.foo >|-|< bar]: expected an operator ("=="|"!="|"~=")"#,
            ),
            ("name==.a", "[name== >|.|< a]: expected value or quoted"),
            (
                "name===a",
                r#"[name >|=|< ==a]: unsupported operator "===""#,
            ),
            ("name!x", r#"[name >|!|< x]: unsupported operator "!""#),
            ("name==/a/", "[name== >|/|< a/]: invalid quote encountered"),
            (
                r"name~=/a\.b/",
                r"[name~= >|/|< a\.b/]: illegal escape sequence",
            ),
            (
                r#"name=="foo"bar"#,
                r#"[name=="foo" >|b|< ar]: unexpected input: b"#,
            ),
            (
                r#"a=="\777""#,
                r#"[a== >|"|< \777"]: unquoting failed: quote syntax error"#,
            ),
            (
                r#"a=="\xaz""#,
                r#"[a== >|"|< \xaz"]: illegal numeric escape sequence"#,
            ),
            (
                r#"a=="abc\"#,
                r#"[a== >|"|< abc\]: illegal escape sequence"#,
            ),
            ("x,,y", "[x, >|,|< y]: expected field or quoted"),
            ("name==牛 x", "[name==牛 >| |< x]: unexpected input:  "),
            (
                "name==foo\0",
                "[name==foo >|\0|< ]: unexpected input: \u{FFFD}",
            ),
            ("foo\0bar", "[foo >|\0|< bar]: unexpected null"),
            (
                r#"name"abc"#,
                r#"[name >|"|< abc]: quoted literal not terminated"#,
            ),
            (
                "labels.\"a\nb\"==x",
                "[labels. >|\"|< a\nb\"==x]: quoted literal not terminated",
            ),
            ("\u{FFFD}", "[ >|\u{FFFD}|< ]: rune error"),
        ];
        for (input, located) in cases {
            assert_eq!(
                parse_error(input),
                format!("filters: parse error: {located}: invalid argument"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_position_is_a_byte_offset() {
        let err = Filter::parse("name==牛 x").expect_err("space after value");
        assert_eq!(err.position(), "name==牛".len());
        assert!(matches!(err, FilterError::Syntax { .. }));
    }

    #[test]
    fn bad_regex_is_a_parse_error_at_the_value() {
        let err = Filter::parse("name==x,id~=(").expect_err("unclosed group");
        assert!(matches!(err, FilterError::Regex { pos: 12, .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("filters: parse error: [name==x,id~= >|(|< ]: error parsing regexp: "),
            "{text}"
        );
        assert!(text.ends_with(": invalid argument"), "{text}");
        assert!(matches!(
            Filter::parse(r#"id~="\xff""#),
            Err(FilterError::Regex { .. })
        ));
    }

    #[test]
    fn operator_strings() {
        let names: Vec<String> = [
            Operator::Present,
            Operator::Equal,
            Operator::NotEqual,
            Operator::Matches,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["?", "==", "!=", "~="]);
    }

    #[test]
    fn alternatives_are_ored() {
        let filter = Filter::parse_all(&["name==bar", "other==abc"]).expect("parse");
        assert_eq!(selected(&filter), [1, 3, 7]);
        let filter = Filter::parse_all(&["name==baz,other==abc", "labels.bar"]).expect("parse");
        assert_eq!(selected(&filter), [3]);
    }

    #[test]
    fn empty_lists_and_empty_strings_match_everything() {
        let all: Vec<usize> = (0..9).collect();
        let none: &[&str] = &[];
        assert_eq!(selected(&Filter::parse_all(none).expect("parse")), all);
        assert_eq!(selected(&Filter::parse_all(&[""]).expect("parse")), all);
        let with_empty = Filter::parse_all(&["name==nothing", ""]).expect("parse");
        assert_eq!(selected(&with_empty), all);
        assert_eq!(selected(&Filter::match_all()), all);
        assert_eq!(selected(&Filter::default()), all);
    }

    #[test]
    fn every_string_in_a_list_is_checked() {
        let err = Filter::parse_all(&["", "name=="]).expect_err("second is bad");
        assert_eq!(
            err.to_string(),
            "filters: parse error: [name==]: expected value or quoted: invalid argument"
        );
        let err = Filter::parse_all(&["type==", "==x"]).expect_err("first is bad");
        assert!(err.to_string().contains("[type==]"), "{err}");
    }

    #[test]
    fn absent_fields_per_operator() {
        let absent = |_: &[String]| None;
        let matching = |input: &str| Filter::parse(input).expect("parse").matches(&absent);
        assert!(!matching("x"), "presence needs the field");
        assert!(!matching("x==a"), "== needs the field");
        assert!(matching("x!=a"), "!= compares the empty string");
        assert!(!matching(r#"x!="""#));
        assert!(matching("x~=^$"), "~= sees the empty string");
    }

    #[test]
    fn white_space_around_operators_and_after_commas() {
        let filter = Filter::parse(" name == bar, labels.bar").expect("parse");
        assert_eq!(selected(&filter), [3]);
    }

    #[test]
    fn bare_values_keep_punctuation_and_backslashes() {
        let seen = |input: &str, value: &str| {
            let value = value.to_string();
            Filter::parse(input)
                .expect("parse")
                .matches(&move |_: &[String]| Some(value.clone()))
        };
        assert!(seen("x==a=b/c|d\"e", "a=b/c|d\"e"));
        assert!(seen("x==牛", "牛"));
        assert!(seen(r"x~=^a\.b$", "a.b"));
        assert!(!seen(r"x~=^a\.b$", "axb"));
    }

    #[test]
    fn quoted_values_decode_go_escapes() {
        let seen = |input: &str, value: &str| {
            let value = value.to_string();
            Filter::parse(input)
                .expect("parse")
                .matches(&move |_: &[String]| Some(value.clone()))
        };
        assert!(seen(r#"x=="\x41\101\u00e9\U0001F600""#, "AAé😀"));
        assert!(seen(
            r#"x=="\a\b\f\n\r\t\v\\\"""#,
            "\x07\x08\x0c\n\r\t\x0b\\\""
        ));
        assert!(seen(r#"x=="\xc3\xa9""#, "é"), "bytes that form UTF-8");
        assert!(
            seen(r#"x=="\ud800""#, "\u{FFFD}"),
            "surrogates become U+FFFD"
        );
        assert!(
            !seen(r#"x=="\xff""#, "\u{FFFD}"),
            "invalid UTF-8 equals nothing"
        );
        assert!(seen(r#"x!="\xff""#, ""));
        assert!(seen(r"x~=/a\/b/", "a/b"));
        assert!(seen(r"x~=|a/b\|c|", "a/b|c"));
        assert!(
            seen(r"x~=/a\\.b/", "a.b"),
            "a doubled backslash reaches the regex"
        );
        assert!(seen(r#"x~="^\\d+$""#, "42"));
    }

    #[test]
    fn quoted_path_components() {
        let labels: HashMap<String, String> =
            [("com.example/key".to_string(), "v".to_string())].into();
        let adaptor = |path: &[String]| labels_field(&labels, path);
        let matching = |input: &str| Filter::parse(input).expect("parse").matches(&adaptor);
        assert!(matching(r#"labels."com.example/key"==v"#));
        assert!(matching(r#"labels."com.example/key""#));
        assert!(
            matching(r#"labels.com."example/key""#),
            "components join with dots"
        );
        assert!(
            !matching(r#"labels."\xff""#),
            "undecodable component is absent"
        );
        assert!(matching(r#"labels."\xff"!=v"#));
        let err = Filter::parse(r#"labels."\g""#).expect_err("bad escape");
        assert!(err.to_string().contains("illegal escape sequence"), "{err}");
    }

    #[test]
    fn labels_field_mirrors_containerd_map_lookup() {
        let path = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let mut labels = HashMap::new();
        assert_eq!(labels_field(&labels, &path(&["labels", ""])), None);
        labels.insert("a.b".to_string(), "1".to_string());
        assert_eq!(
            labels_field(&labels, &path(&["labels", "a", "b"])),
            Some("1".into())
        );
        assert_eq!(labels_field(&labels, &path(&["labels", "a"])), None);
        assert_eq!(labels_field(&labels, &path(&["labels"])), None);
        assert_eq!(labels_field(&labels, &path(&["name", "a.b"])), None);
        labels.insert(String::new(), "empty key".to_string());
        assert_eq!(
            labels_field(&labels, &path(&["labels"])),
            Some("empty key".into())
        );
        assert_eq!(map_field(&HashMap::new(), &path(&[""])), None);
    }
}
