//! containerd's filter syntax, used by List-style requests.
//!
//! A request carries a list of filter strings, any of which may match (OR). One string is
//! a comma-separated list of selectors that must all match (AND). A selector is a field
//! path, optionally followed by an operator and a value:
//!
//! - `labels."com.example.key"` — the field is present;
//! - `name==value`, `name!=value` — (in)equality (an absent field counts as the empty
//!   string for `!=`);
//! - `name~=regex` — regular-expression match; the value may be quoted with `"…"`, `/…/`
//!   or `|…|`.
//!
//! Field path components are bare words or `"`-quoted strings, separated by dots.

use regex_lite::Regex;

/// Something filters can look at: the value of a field path, or `None` when absent.
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Option<String>;
}

impl<F: Fn(&[String]) -> Option<String>> Adaptor for F {
    fn field(&self, path: &[String]) -> Option<String> {
        self(path)
    }
}

/// A filter string that does not parse; reads like containerd's parse errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("parse error: {context}: {message}: invalid argument")]
pub struct FilterError {
    context: String,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Present,
    Equal,
    NotEqual,
    Matches,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    operator: Operator,
    value: String,
    regex: Option<Regex>,
}

impl Selector {
    fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        let value = adaptor.field(&self.path);
        match self.operator {
            Operator::Present => value.is_some(),
            Operator::Equal => value.as_deref() == Some(self.value.as_str()),
            Operator::NotEqual => value.unwrap_or_default() != self.value,
            Operator::Matches => self
                .regex
                .as_ref()
                .is_some_and(|re| re.is_match(&value.unwrap_or_default())),
        }
    }
}

/// A parsed filter: alternatives of selector conjunctions.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Empty means "match everything".
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// A filter that matches everything.
    pub fn match_all() -> Filter {
        Filter::default()
    }

    /// Parses a request's filter list; an empty list, or only empty strings, match all.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        let mut any = Vec::new();
        for filter in filters {
            let filter = filter.as_ref();
            if filter.is_empty() {
                // An empty alternative matches everything.
                return Ok(Filter::match_all());
            }
            any.push(Parser::new(filter).selectors()?);
        }
        Ok(Filter { any })
    }

    /// Parses one filter string.
    pub fn parse(filter: &str) -> Result<Filter, FilterError> {
        Filter::parse_all(&[filter])
    }

    pub fn matches(&self, adaptor: &dyn Adaptor) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(adaptor)))
    }
}

/// The common adaptor part for `labels.<key>` paths (`path` without the leading `labels`):
/// the key is the rest of the path joined by dots; `labels` alone is absent.
pub fn labels_field<'a, I>(labels: I, path: &[String]) -> Option<String>
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    if path.is_empty() {
        return None;
    }
    let key = path.join(".");
    labels
        .into_iter()
        .find(|(k, _)| **k == key)
        .map(|(_, v)| v.clone())
}

struct Parser<'a> {
    input: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_value(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, ',' | '=' | '!' | '~' | '"' | '|')
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.char_indices().collect(),
            pos: 0,
        }
    }

    fn error(&self, message: impl Into<String>) -> FilterError {
        let context = match self.chars.get(self.pos) {
            Some(&(at, c)) => {
                let end = at + c.len_utf8();
                format!(
                    "[{} >|{}|< {}]",
                    &self.input[..at],
                    &self.input[at..end],
                    &self.input[end..]
                )
            }
            None => format!("[{}]", self.input),
        };
        FilterError {
            context,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = vec![self.selector()?];
        loop {
            self.skip_space();
            match self.peek() {
                None => return Ok(all),
                Some(',') => {
                    self.pos += 1;
                    all.push(self.selector()?);
                }
                Some(c) => return Err(self.error(format!("unexpected input: {c}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.field_path()?;
        self.skip_space();
        let operator = match self.peek() {
            None | Some(',') => {
                return Ok(Selector {
                    path,
                    operator: Operator::Present,
                    value: String::new(),
                    regex: None,
                })
            }
            Some(_) => self.operator()?,
        };
        self.skip_space();
        let value = self.value(operator == Operator::Matches)?;
        let regex = if operator == Operator::Matches {
            Some(
                Regex::new(&value)
                    .map_err(|err| self.error(format!("bad regex {value:?}: {err}")))?,
            )
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

    fn field_path(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = vec![self.component()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.component()?);
        }
        Ok(path)
    }

    fn component(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(c) if is_word(c) => {
                let mut word = String::new();
                while let Some(c) = self.peek().filter(|&c| is_word(c) || c == '-') {
                    word.push(c);
                    self.pos += 1;
                }
                Ok(word)
            }
            Some(c) => Err(self.error(format!("expected field or quoted, found {c:?}"))),
            None => Err(self.error("expected field or quoted")),
        }
    }

    fn operator(&mut self) -> Result<Operator, FilterError> {
        let two: String = self.chars[self.pos..]
            .iter()
            .take(2)
            .map(|&(_, c)| c)
            .collect();
        let op = match two.as_str() {
            "==" => Operator::Equal,
            "!=" => Operator::NotEqual,
            "~=" => Operator::Matches,
            _ => return Err(self.error("expected an operator (\"==\"|\"!=\"|\"~=\")")),
        };
        self.pos += 2;
        Ok(op)
    }

    fn value(&mut self, alternate_quotes: bool) -> Result<String, FilterError> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(q @ ('/' | '|')) if alternate_quotes => self.quoted(q),
            Some(c) if is_value(c) => {
                let mut value = String::new();
                while let Some(c) = self.peek().filter(|&c| is_value(c)) {
                    value.push(c);
                    self.pos += 1;
                }
                Ok(value)
            }
            _ => Err(self.error("expected value or quoted")),
        }
    }

    /// A string between `quote`s; backslash escapes the quote, itself and `n`, `t`, `r`.
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("unterminated quoted string"));
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        // Inside a regex, keep the escape for the regex engine.
                        Some(c) if quote != '"' && c != quote => {
                            out.push('\\');
                            c
                        }
                        Some(c) => c,
                        None => {
                            self.pos = start;
                            return Err(self.error("unterminated quoted string"));
                        }
                    };
                    out.push(escaped);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Object {
        name: &'static str,
        other: Option<&'static str>,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Object {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.into()),
                Some("other") => self.other.map(Into::into),
                Some("labels") => labels_field(self.labels.iter(), &path[1..]),
                _ => None,
            }
        }
    }

    fn corpus() -> Vec<Object> {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        vec![
            Object {
                name: "foo",
                other: Some("bar"),
                labels: labels(&[("a", "1"), ("com.example.x", "y")]),
            },
            Object {
                name: "bar",
                other: None,
                labels: labels(&[("a", "2")]),
            },
            Object {
                name: "foo-bar",
                other: Some("baz"),
                labels: labels(&[]),
            },
        ]
    }

    fn names(filters: &[&str]) -> Vec<&'static str> {
        let filter = Filter::parse_all(filters).expect("parse");
        corpus()
            .into_iter()
            .filter(|o| filter.matches(o))
            .map(|o| o.name)
            .collect()
    }

    #[test]
    fn selectors_and_alternatives() {
        assert_eq!(names(&[]), ["foo", "bar", "foo-bar"]);
        assert_eq!(names(&[""]), ["foo", "bar", "foo-bar"]);
        assert_eq!(names(&["name==foo"]), ["foo"]);
        assert_eq!(names(&["name!=foo"]), ["bar", "foo-bar"]);
        assert_eq!(names(&["other"]), ["foo", "foo-bar"]);
        assert_eq!(
            names(&["other!=bar"]),
            ["bar", "foo-bar"],
            "absent counts as empty"
        );
        assert_eq!(names(&["labels.a==1"]), ["foo"]);
        assert_eq!(names(&["labels.a"]), ["foo", "bar"]);
        assert_eq!(names(&["labels.\"com.example.x\"==y"]), ["foo"]);
        assert_eq!(names(&["name==foo", "name==bar"]), ["foo", "bar"]);
        assert_eq!(names(&["name~=^foo,other==baz"]), ["foo-bar"]);
        assert_eq!(names(&["name~=/^f.*r$/"]), ["foo-bar"]);
        assert_eq!(names(&["name~=|bar|"]), ["bar", "foo-bar"]);
        assert_eq!(names(&["name==\"foo-bar\""]), ["foo-bar"]);
        assert_eq!(names(&[" name == bar "]), ["bar"]);
    }

    #[test]
    fn parse_errors_point_at_the_input() {
        let err = Filter::parse("name==").expect_err("no value");
        assert_eq!(
            err.to_string(),
            "parse error: [name==]: expected value or quoted: invalid argument"
        );
        let err = Filter::parse("name=>x").expect_err("bad operator");
        assert!(err.to_string().contains("[name >|=|< >x]"), "{err}");
        assert!(Filter::parse("==x").is_err());
        assert!(Filter::parse("name==a b").is_err());
        assert!(Filter::parse("labels.\"x==1").is_err());
        assert!(Filter::parse("id~=(").is_err(), "bad regex");
        assert!(Filter::parse_all(&["name==a", "name=="]).is_err());
    }
}
